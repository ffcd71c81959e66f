package tlsutil

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair is an issued certificate and key, with the serial that tells it
// apart.
type pair struct {
	certPEM, keyPEM []byte
	serial          string
}

func newPair(t *testing.T, ca *CA, req CertRequest) pair {
	t.Helper()
	certPEM, keyPEM := mustIssue(t, ca, req)
	certs, err := parseCertificates(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair{certPEM: certPEM, keyPEM: keyPEM, serial: certs[0].SerialNumber.String()}
}

func serialOf(c *tls.Certificate) string { return c.Leaf.SerialNumber.String() }

func currentSerial(t *testing.T, kp *KeyPair) string {
	t.Helper()
	c, err := kp.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if got := kp.Leaf().SerialNumber.String(); got != serialOf(c) {
		t.Fatalf("Leaf() is serial %s, Certificate() %s", got, serialOf(c))
	}
	return serialOf(c)
}

func TestLoadKeyPairErrors(t *testing.T) {
	ca := newTestCA(t, "ca")
	a := newPair(t, ca, CertRequest{Kind: KindServer})
	b := newPair(t, ca, CertRequest{Kind: KindServer})
	tests := []struct {
		name            string
		certPEM, keyPEM []byte
		noCert          bool
		wantErr         []string // each must appear in the error
	}{
		{name: "missing certificate file", noCert: true, keyPEM: a.keyPEM, wantErr: []string{"cert.pem", "no such file"}},
		{name: "empty certificate file", certPEM: []byte{}, keyPEM: a.keyPEM, wantErr: []string{"certificate file", "cert.pem", "empty"}},
		{name: "key in the certificate file", certPEM: a.keyPEM, keyPEM: a.keyPEM, wantErr: []string{"cert.pem", "no PEM CERTIFICATE"}},
		{name: "truncated certificate", certPEM: a.certPEM[:len(a.certPEM)/2], keyPEM: a.keyPEM, wantErr: []string{"cert.pem", "incomplete"}},
		{name: "certificate in the key file", certPEM: a.certPEM, keyPEM: a.certPEM, wantErr: []string{"key file", "cert-key.pem", "no PEM private key"}},
		{name: "truncated key", certPEM: a.certPEM, keyPEM: a.keyPEM[:len(a.keyPEM)/2], wantErr: []string{"cert-key.pem", "incomplete"}},
		{name: "key of another certificate", certPEM: a.certPEM, keyPEM: b.keyPEM, wantErr: []string{"cert-key.pem", "does not belong", "cert.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := writePair(t, dir, "cert", tt.certPEM, tt.keyPEM)
			if tt.noCert {
				if err := os.Remove(certFile); err != nil {
					t.Fatal(err)
				}
			}
			kp, err := LoadKeyPair(certFile, keyFile, nil)
			if err == nil {
				t.Fatalf("LoadKeyPair succeeded (%v), want an error", kp.Leaf().Subject)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
	t.Run("missing file wraps fs.ErrNotExist", func(t *testing.T) {
		_, err := LoadKeyPair(filepath.Join(t.TempDir(), "x.pem"), "y.pem", nil)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadKeyPair = %v, want fs.ErrNotExist", err)
		}
	})
}

// TestKeyPairReloadsOnChange: with interval 0 every call checks, so a
// change must be visible at the very next call.
func TestKeyPairReloadsOnChange(t *testing.T) {
	ca := newTestCA(t, "ca")
	tests := []struct {
		name string
		// setup writes p and returns the files to load.
		setup func(t *testing.T, dir string, p pair) (certFile, keyFile string)
		// change replaces them with p.
		change func(t *testing.T, dir string, p pair)
	}{
		{
			name: "renamed over (new inode)",
			setup: func(t *testing.T, dir string, p pair) (string, string) {
				return writePair(t, dir, "cert", p.certPEM, p.keyPEM)
			},
			change: func(t *testing.T, dir string, p pair) { writePair(t, dir, "cert", p.certPEM, p.keyPEM) },
		},
		{
			name: "rewritten in place",
			setup: func(t *testing.T, dir string, p pair) (string, string) {
				return writePair(t, dir, "cert", p.certPEM, p.keyPEM)
			},
			change: func(t *testing.T, dir string, p pair) {
				certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "cert-key.pem")
				mustWriteInPlace(t, certFile, p.certPEM)
				mustWriteInPlace(t, keyFile, p.keyPEM)
				// A rewrite that keeps the size within the file system's
				// timestamp granularity cannot be seen (which is why
				// renaming is the way to replace the files); make sure
				// this one can, whatever the sizes.
				future := time.Now().Add(time.Minute)
				for _, f := range []string{certFile, keyFile} {
					if err := os.Chtimes(f, future, future); err != nil {
						t.Fatal(err)
					}
				}
			},
		},
		{
			// A mounted Kubernetes secret: cert.pem -> ..data/cert.pem and
			// ..data -> ..v1; an update writes ..v2 and renames a new
			// ..data link over the old one.
			name: "symlinks swapped as Kubernetes does",
			setup: func(t *testing.T, dir string, p pair) (string, string) {
				writePair(t, filepath.Join(dir, "..v1"), "cert", p.certPEM, p.keyPEM)
				mustSymlink(t, "..v1", filepath.Join(dir, "..data"))
				for _, f := range []string{"cert.pem", "cert-key.pem"} {
					mustSymlink(t, filepath.Join("..data", f), filepath.Join(dir, f))
				}
				return filepath.Join(dir, "cert.pem"), filepath.Join(dir, "cert-key.pem")
			},
			change: func(t *testing.T, dir string, p pair) {
				writePair(t, filepath.Join(dir, "..v2"), "cert", p.certPEM, p.keyPEM)
				mustSymlink(t, "..v2", filepath.Join(dir, "..data_tmp"))
				if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			a := newPair(t, ca, CertRequest{Kind: KindServer})
			b := newPair(t, ca, CertRequest{Kind: KindServer})
			certFile, keyFile := tt.setup(t, dir, a)
			kp := mustLoadKeyPair(t, certFile, keyFile, nil)
			kp.SetReloadInterval(0)
			if got := currentSerial(t, kp); got != a.serial {
				t.Fatalf("serves %s, want A %s", got, a.serial)
			}
			tt.change(t, dir, b)
			if got := currentSerial(t, kp); got != b.serial {
				t.Fatalf("after the change serves %s, want B %s", got, b.serial)
			}
		})
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mustWriteInPlace(t *testing.T, file string, data []byte) {
	t.Helper()
	if err := os.WriteFile(file, data, 0o600); err != nil { // truncates: same inode
		t.Fatal(err)
	}
}

// TestKeyPairChecksOncePerInterval: a change is not seen before the
// interval has passed since the last check, and SetReloadInterval applies
// to the next call.
func TestKeyPairChecksOncePerInterval(t *testing.T) {
	ca := newTestCA(t, "ca")
	a := newPair(t, ca, CertRequest{Kind: KindServer})
	b := newPair(t, ca, CertRequest{Kind: KindServer})
	dir := t.TempDir()
	certFile, keyFile := writePair(t, dir, "cert", a.certPEM, a.keyPEM)
	kp := mustLoadKeyPair(t, certFile, keyFile, nil)
	kp.SetReloadInterval(time.Hour)
	writePair(t, dir, "cert", b.certPEM, b.keyPEM)
	for range 10 {
		if got := currentSerial(t, kp); got != a.serial {
			t.Fatalf("serves %s before the interval passed, want A %s", got, a.serial)
		}
	}
	kp.SetReloadInterval(0)
	if got := currentSerial(t, kp); got != b.serial {
		t.Fatalf("serves %s after the interval was shortened, want B %s", got, b.serial)
	}
}

// TestKeyPairDoesNotRereadUnchangedFiles: a check that finds the files
// unchanged only stats them.
func TestKeyPairDoesNotRereadUnchangedFiles(t *testing.T) {
	ca := newTestCA(t, "ca")
	a := newPair(t, ca, CertRequest{Kind: KindServer})
	certFile, keyFile := writePair(t, t.TempDir(), "cert", a.certPEM, a.keyPEM)
	kp := mustLoadKeyPair(t, certFile, keyFile, nil)
	loads := 0
	load := kp.r.load
	kp.r.load = func() (*tls.Certificate, error) { loads++; return load() }
	kp.SetReloadInterval(0)
	for range 100 {
		currentSerial(t, kp)
	}
	if loads != 0 {
		t.Errorf("the unchanged files were read %d times", loads)
	}
}

// TestKeyPairKeepsOldPairOnBadFiles: files that do not make a valid pair
// leave the old one in use, are logged once per version, and are retried
// until they are fixed.
func TestKeyPairKeepsOldPairOnBadFiles(t *testing.T) {
	ca := newTestCA(t, "ca")
	tests := []struct {
		name    string
		write   func(t *testing.T, certFile, keyFile string, a, b pair)
		wantLog string
	}{
		{
			name: "half-written certificate",
			write: func(t *testing.T, certFile, keyFile string, a, b pair) {
				mustWriteInPlace(t, certFile, b.certPEM[:len(b.certPEM)-40])
			},
			wantLog: "incomplete",
		},
		{
			name: "new certificate, old key",
			write: func(t *testing.T, certFile, keyFile string, a, b pair) {
				writePair(t, filepath.Dir(certFile), "new", b.certPEM, b.keyPEM)
				if err := os.Rename(filepath.Join(filepath.Dir(certFile), "new.pem"), certFile); err != nil {
					t.Fatal(err)
				}
			},
			wantLog: "does not belong",
		},
		{
			name: "empty key",
			write: func(t *testing.T, certFile, keyFile string, a, b pair) {
				mustWriteInPlace(t, keyFile, nil)
			},
			wantLog: "empty",
		},
		{
			name: "certificate removed",
			write: func(t *testing.T, certFile, keyFile string, a, b pair) {
				if err := os.Remove(certFile); err != nil {
					t.Fatal(err)
				}
			},
			wantLog: "no such file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newPair(t, ca, CertRequest{Kind: KindServer})
			b := newPair(t, ca, CertRequest{Kind: KindServer})
			c := newPair(t, ca, CertRequest{Kind: KindServer})
			dir := t.TempDir()
			certFile, keyFile := writePair(t, dir, "cert", a.certPEM, a.keyPEM)
			logger, logs := newTestLogger()
			kp := mustLoadKeyPair(t, certFile, keyFile, logger)
			kp.SetReloadInterval(0)

			tt.write(t, certFile, keyFile, a, b)
			for range 20 {
				if got := currentSerial(t, kp); got != a.serial {
					t.Fatalf("serves %s from bad files, want the old A %s", got, a.serial)
				}
			}
			if n := logs.count("[ERROR]"); n != 1 {
				t.Fatalf("logged %d errors for one bad version of the files, want 1:\n%s", n, logs)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("the log does not say %q:\n%s", tt.wantLog, logs)
			}

			// Another bad version is logged again.
			mustWriteInPlace(t, filepath.Join(dir, "cert.pem"), []byte("-----BEGIN CERTIFICATE-----\nMII"))
			if got := currentSerial(t, kp); got != a.serial {
				t.Fatalf("serves %s from bad files, want the old A %s", got, a.serial)
			}
			if n := logs.count("[ERROR]"); n != 2 {
				t.Fatalf("logged %d errors for two bad versions, want 2:\n%s", n, logs)
			}

			// Good files are picked up at the next check.
			writePair(t, dir, "cert", c.certPEM, c.keyPEM)
			if got := currentSerial(t, kp); got != c.serial {
				t.Fatalf("serves %s after the files were fixed, want C %s", got, c.serial)
			}
			if n := logs.count("reloaded the certificate"); n != 1 {
				t.Errorf("logged %d reloads, want 1:\n%s", n, logs)
			}
		})
	}
}

// TestKeyPairConcurrentRotation runs Certificate from many goroutines
// while the files rotate (for the race detector): every pair returned is
// a matching certificate and key.
func TestKeyPairConcurrentRotation(t *testing.T) {
	ca := newTestCA(t, "ca")
	pairs := []pair{newPair(t, ca, CertRequest{Kind: KindServer}), newPair(t, ca, CertRequest{Kind: KindServer})}
	dir := t.TempDir()
	certFile, keyFile := writePair(t, dir, "cert", pairs[0].certPEM, pairs[0].keyPEM)
	kp := mustLoadKeyPair(t, certFile, keyFile, nil)
	kp.SetReloadInterval(0)

	stop := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, _ := kp.Certificate()
				if err := checkKeyMatches(c.Leaf, c.PrivateKey.(crypto.Signer)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 50 {
		p := pairs[i%2]
		writePair(t, dir, "cert", p.certPEM, p.keyPEM)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestLoadCAPool(t *testing.T) {
	ca1, ca2 := newTestCA(t, "ca1"), newTestCA(t, "ca2")
	tests := []struct {
		name    string
		content []byte
		wantErr string
		trusts  []*CA
	}{
		{name: "one CA", content: ca1.CertPEM, trusts: []*CA{ca1}},
		{name: "bundle of two", content: append(append([]byte{}, ca1.CertPEM...), ca2.CertPEM...), trusts: []*CA{ca1, ca2}},
		{name: "empty", content: nil, wantErr: "empty"},
		{name: "only a key", content: ca1.KeyPEM, wantErr: "no PEM CERTIFICATE"},
		{name: "bundle with a truncated last certificate", content: append(append([]byte{}, ca1.CertPEM...), ca2.CertPEM[:100]...), wantErr: "incomplete"},
		{name: "corrupt certificate", content: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), wantErr: "certificate 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeCA(t, t.TempDir(), "ca", tt.content)
			p, err := LoadCAPool(file, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), file) {
					t.Fatalf("LoadCAPool = %v, want an error naming %s and containing %q", err, file, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, ca := range []*CA{ca1, ca2} {
				certPEM, _ := mustIssue(t, ca, CertRequest{Kind: KindClient, Name: "alice"})
				certs, err := parseCertificates(certPEM)
				if err != nil {
					t.Fatal(err)
				}
				_, err = certs[0].Verify(x509.VerifyOptions{Roots: p.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
				if want := slices.Contains(tt.trusts, ca); (err == nil) != want {
					t.Errorf("a certificate from %s verifies: %v; want %v", ca.Cert.Subject, err, want)
				}
			}
		})
	}
}
