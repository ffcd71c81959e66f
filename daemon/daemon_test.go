package daemon

import (
	"os"
	"testing"
)

func TestAdvertisable(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ in, want string }{
		{"127.0.0.1:34904", "127.0.0.1:34904"},
		{"node1:34904", "node1:34904"},
		{"0.0.0.0:34904", host + ":34904"},
		{"[::]:34905", host + ":34905"},
		{":34905", host + ":34905"},
		{"0.0.0.0:0", ""},
		{"127.0.0.1:0", ""},
	}
	for _, tc := range tests {
		if got := advertisable(tc.in); got != tc.want {
			t.Errorf("advertisable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
