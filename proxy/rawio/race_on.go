//go:build race

package rawio

import (
	"runtime"
	"unsafe"
)

// ioSync is the race detector's stand-in for "the bytes went through the
// kernel", as syscall.Read and syscall.Write annotate it: a write
// happens before the read that gets its bytes. RawSyscall skips those
// annotations, and without them -race reports every handoff through a
// socket (a test reading a log its server wrote before answering) as a
// race.
var ioSync int64

func raceAfterRead(p []byte, n int) {
	if n > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), n)
	}
	runtime.RaceAcquire(unsafe.Pointer(&ioSync))
}

func raceBeforeWrite() { runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync)) }

func raceAfterWrite(p []byte, n int) {
	if n > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), n)
	}
}
