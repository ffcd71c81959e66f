//go:build unix

// Package cputime reads the CPU time the running process has used, for
// the load generator's and the tests' CPU-per-call figures.
package cputime

import (
	"syscall"
	"time"
)

// Self is the CPU time, user and system, this process has used so far; 0
// if it cannot be read.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
