package etcdtest

import "syscall"

// sysProcAttr makes etcd die with the test binary, even when the test is
// killed before its cleanups run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
