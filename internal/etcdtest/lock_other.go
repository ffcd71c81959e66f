//go:build !unix

package etcdtest

// lockFile does not lock where there is no flock: processes building the
// embedded etcd at once each build it, and the last rename wins.
func lockFile(string) (func(), error) { return func() {}, nil }
