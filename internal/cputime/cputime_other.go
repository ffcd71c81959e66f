//go:build !unix

// Package cputime reads the CPU time the running process has used, for
// the load generator's and the tests' CPU-per-call figures.
package cputime

import "time"

// Self is not measured on this platform: always 0.
func Self() time.Duration { return 0 }
