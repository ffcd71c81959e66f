//go:build race

package cluster

// raceEnabled says the race detector is on, which slows the data
// directory check by an order of magnitude; timing budgets allow for it.
const raceEnabled = true
