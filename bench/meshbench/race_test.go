//go:build race

package main

// raceEnabled builds the mesh binaries of the scenario test with -race too,
// so they share the build cache with test/e2e's.
const raceEnabled = true
