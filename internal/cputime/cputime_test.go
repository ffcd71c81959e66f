//go:build unix

package cputime

import "testing"

func TestSelfIsPositive(t *testing.T) {
	if d := Self(); d <= 0 {
		t.Fatalf("Self() = %v, want the CPU time this test process has used", d)
	}
}
