// Package e2e holds end-to-end tests of the mesh: a trellis-controller in
// local mode and trellis-proxy processes on loopback, with echo servers
// inside the test process behind them. Run with
//
//	go test -race ./test/e2e/
//
// Under -race the binaries are built with the race detector too. -short
// skips the long load tests.
package e2e
