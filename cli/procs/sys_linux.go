package procs

import "syscall"

func sysProcAttr() *syscall.SysProcAttr {
	// Pdeathsig fires when the thread that forked the child exits; the Go
	// runtime does not retire threads unless a goroutine locked to one
	// ends, which this package never does.
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, sig) // ESRCH: the group is already gone
	}
}
