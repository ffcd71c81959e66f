package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// tokenCreateUsage is the synopsis of `ordinal token create`.
const tokenCreateUsage = "ordinal token create --role admin|ids --name NAME [--out FILE] [--tokens-file FILE]"

// runToken runs `ordinal token SUBCOMMAND`.
func runToken(args []string) error {
	return tokenCommand(args, os.Stdout, os.Stderr)
}

// tokenCommand is runToken writing to stdout and stderr.
func tokenCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.UsageErrorf("token: no subcommand given; usage: %s", tokenCreateUsage)
	}
	switch args[0] {
	case "create":
		return tokenCreate(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintf(stderr, "Usage: %s\n\nMakes a bearer token for a node's --auth-tokens-file; see ordinal token create --help.\n", tokenCreateUsage)
		return cli.ErrHelp
	}
	return cli.UsageErrorf("token: unknown subcommand %q; usage: %s", args[0], tokenCreateUsage)
}

// tokenCreateFlags are the flags of `ordinal token create`.
type tokenCreateFlags struct {
	role, name, out, tokensFile string
}

// tokenCreate makes a token and hands out its two halves: the token for the
// caller (stdout or --out) and the line with its hash for the nodes' tokens
// file (stderr or appended to --tokens-file).
func tokenCreate(args []string, stdout, stderr io.Writer) error {
	var f tokenCreateFlags
	set := cli.NewFlagSet("token create", tokenCreateUsage)
	set.StringVar(&f.role, "role", "", "role the token grants: admin (every call) or ids (taking IDs, health)")
	set.StringVar(&f.name, "name", "", "who holds the token: unique in the tokens file, shown in logs and errors")
	set.StringVar(&f.out, "out", "", "write the token to this new file (mode 0600) instead of stdout; never overwrites")
	set.StringVar(&f.tokensFile, "tokens-file", "", "append the tokens file line to this file (created with mode 0600) instead of printing it to stderr")
	positional, err := cli.ParseCommandFlags("token create", set, args)
	if err != nil {
		return err
	}
	if err := f.check(positional); err != nil {
		return err
	}
	var lines []auth.TokenEntry
	if f.tokensFile != "" {
		lines, err = auth.ReadTokensFile(f.tokensFile)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("token create: %w; fix it before adding a token", err)
		}
		for _, e := range lines {
			if e.Name == f.name {
				return fmt.Errorf("token create: %s already has a token named %q (line %d); choose another --name, or delete that line to replace the token", f.tokensFile, f.name, e.Line)
			}
		}
	}
	token, err := auth.NewToken()
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	line, err := auth.FormatTokenLine(auth.Role(f.role), f.name, token)
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	if f.out != "" {
		if err := writeNewFile(f.out, token+"\n"); err != nil {
			return fmt.Errorf("token create: %w", err)
		}
	}
	if f.tokensFile != "" {
		if err := appendLine(f.tokensFile, line); err != nil {
			if f.out != "" {
				// A token no tokens file knows would only mislead.
				os.Remove(f.out)
			}
			return fmt.Errorf("token create: %w", err)
		}
	}
	if f.out == "" {
		fmt.Fprintln(stdout, token)
	}
	if f.tokensFile == "" {
		fmt.Fprintln(stderr, line)
	} else {
		fmt.Fprintf(stderr, "added %s (role %s) to %s; nodes reading it accept the token within their reload interval\n", f.name, f.role, f.tokensFile)
	}
	return nil
}

// check validates the command line before anything is written.
func (f tokenCreateFlags) check(positional []string) error {
	switch {
	case len(positional) > 0:
		return cli.UsageErrorf("token create: unexpected argument %q: the command takes only flags; usage: %s", positional[0], tokenCreateUsage)
	case f.role == "":
		return cli.UsageErrorf("token create: --role is required: admin or ids")
	case f.name == "":
		return cli.UsageErrorf("token create: --name is required: who holds the token")
	}
	if _, err := auth.FormatTokenLine(auth.Role(f.role), f.name, ""); err != nil {
		return &cli.UsageError{Err: fmt.Errorf("token create: %w", err)}
	}
	return nil
}

// writeNewFile writes content to path, which must not exist yet, readable
// by its owner only.
func writeNewFile(path, content string) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; refusing to overwrite it (a token there may still be in use): remove it or choose another --out", path)
	}
	if err != nil {
		return err
	}
	if _, err := io.WriteString(file, content); err != nil {
		file.Close()
		os.Remove(path)
		return err
	}
	if err := file.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// appendLine appends line to the file at path, creating it with mode 0600,
// and starting a new line first if the file does not end with one.
func appendLine(path, line string) error {
	file, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	info, err := file.Stat()
	if err != nil {
		file.Close()
		return err
	}
	if size := info.Size(); size > 0 {
		last := make([]byte, 1)
		if _, err := file.ReadAt(last, size-1); err != nil {
			file.Close()
			return err
		}
		if last[0] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := io.WriteString(file, line+"\n"); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}
