//go:build !race

package cluster

// raceEnabled says the race detector is on; see race_on_test.go.
const raceEnabled = false
