// Package procstat reads a process's CPU time and memory from /proc.
package procstat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports (the kernel fixes it for
// userspace ABI stability), so it is not read from sysconf.
const clockTick = 10 * time.Millisecond

// Stat is what /proc/PID/stat says about CPU and the parent.
type Stat struct {
	PPID int
	CPU  time.Duration // utime + stime, all threads
}

// ParseStat parses the contents of /proc/PID/stat. The command name (field
// 2) is in parentheses and may itself hold spaces and parentheses, so the
// fields are counted from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errors.New("procstat: stat has no ')' after the command name")
	}
	// After ')': state(3) ppid(4) ... utime(14) stime(15).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return Stat{}, fmt.Errorf("procstat: stat has %d fields after the command name, want at least 13", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("procstat: ppid: %w", err)
	}
	utime, err := strconv.ParseUint(f[11], 10, 63)
	if err != nil {
		return Stat{}, fmt.Errorf("procstat: utime: %w", err)
	}
	stime, err := strconv.ParseUint(f[12], 10, 63)
	if err != nil {
		return Stat{}, fmt.Errorf("procstat: stime: %w", err)
	}
	const maxTicks = uint64(1<<63-1) / uint64(clockTick) / 2
	if utime > maxTicks || stime > maxTicks {
		return Stat{}, errors.New("procstat: utime or stime out of range")
	}
	return Stat{PPID: ppid, CPU: time.Duration(utime+stime) * clockTick}, nil
}

// Memory is what /proc/PID/status says about resident memory, in bytes.
type Memory struct {
	RSS int64 // VmRSS: resident now
	HWM int64 // VmHWM: peak resident since start
}

// ParseStatus parses VmRSS and VmHWM from the contents of /proc/PID/status.
func ParseStatus(b []byte) (Memory, error) {
	v, err := parseKBFields(b, "VmRSS", "VmHWM")
	if err != nil {
		return Memory{}, fmt.Errorf("%w (a kernel thread or a zombie?)", err)
	}
	return Memory{RSS: v["VmRSS"], HWM: v["VmHWM"]}, nil
}

// parseKBFields reads the "Key: N kB" lines of a /proc file for the given
// keys, in bytes; every key must be there.
func parseKBFields(b []byte, keys ...string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || !slices.Contains(keys, key) {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return nil, fmt.Errorf("procstat: %s: want \"N kB\", got %q", key, strings.TrimSpace(val))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<40 {
			return nil, fmt.Errorf("procstat: %s: bad size %q", key, f[0])
		}
		out[key] = kb * 1024
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("procstat: %w", err)
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("procstat: no %s line", k)
		}
	}
	return out, nil
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, fmt.Errorf("procstat: %w", err)
	}
	return ParseStat(b)
}

// ReadMemory reads /proc/PID/status.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return Memory{}, fmt.Errorf("procstat: %w", err)
	}
	return ParseStatus(b)
}

// Children lists the PIDs whose parent is pid (one level), such as nginx's
// workers under its master.
func Children(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("procstat: %w", err)
	}
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(p)
		if err != nil {
			continue // gone meanwhile
		}
		if st.PPID == pid {
			kids = append(kids, p)
		}
	}
	return kids, nil
}

// Group is a set of processes measured as one (nginx's master and worker).
type Group []int

// CPU sums the CPU time of the group.
func (g Group) CPU() (time.Duration, error) {
	var sum time.Duration
	for _, pid := range g {
		st, err := ReadStat(pid)
		if err != nil {
			return 0, err
		}
		sum += st.CPU
	}
	return sum, nil
}

// Memory sums the memory of the group. Pages shared between the processes
// (nginx's master and worker share code) count once per process, as RSS
// always does.
func (g Group) Memory() (Memory, error) {
	var sum Memory
	for _, pid := range g {
		m, err := ReadMemory(pid)
		if err != nil {
			return Memory{}, err
		}
		sum.RSS += m.RSS
		sum.HWM += m.HWM
	}
	return sum, nil
}

// SystemCPU is the machine-wide CPU time from the first line of /proc/stat.
type SystemCPU struct {
	// Busy is user, nice, system and steal. Interrupt time is left out: the
	// kernel charges loopback packet processing there rather than to the
	// processes that caused it, so it would look like someone else's load.
	Busy  time.Duration
	Total time.Duration // Busy plus idle, iowait, irq and softirq
}

// ParseSystemCPU parses the contents of /proc/stat.
func ParseSystemCPU(b []byte) (SystemCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return SystemCPU{}, errors.New("procstat: /proc/stat does not start with an aggregate cpu line of 8 or more fields")
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 63)
		if err != nil || n > 1<<50 {
			return SystemCPU{}, fmt.Errorf("procstat: /proc/stat field %d: bad value %q", i+1, f[i+1])
		}
		v[i] = n
	}
	// user nice system idle iowait irq softirq steal
	busy := v[0] + v[1] + v[2] + v[7]
	return SystemCPU{Busy: time.Duration(busy) * clockTick, Total: time.Duration(busy+v[3]+v[4]+v[5]+v[6]) * clockTick}, nil
}

// ReadSystemCPU reads /proc/stat.
func ReadSystemCPU() (SystemCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return SystemCPU{}, fmt.Errorf("procstat: %w", err)
	}
	return ParseSystemCPU(b)
}

// Rollup is what /proc/PID/smaps_rollup says about resident memory, in
// bytes: RSS split into anonymous pages (heap, stacks, runtime data) and
// file-backed pages (the binary's code and read-only data actually touched,
// shared libraries).
type Rollup struct {
	RSS, Anonymous, File int64
}

// ParseSmapsRollup parses the Rss and Anonymous lines of
// /proc/PID/smaps_rollup; File is their difference.
func ParseSmapsRollup(b []byte) (Rollup, error) {
	v, err := parseKBFields(b, "Rss", "Anonymous")
	if err != nil {
		return Rollup{}, err
	}
	r := Rollup{RSS: v["Rss"], Anonymous: v["Anonymous"]}
	if r.Anonymous > r.RSS {
		return Rollup{}, errors.New("procstat: smaps_rollup says Anonymous exceeds Rss")
	}
	r.File = r.RSS - r.Anonymous
	return r, nil
}

// ReadSmapsRollup reads /proc/PID/smaps_rollup.
func ReadSmapsRollup(pid int) (Rollup, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return Rollup{}, fmt.Errorf("procstat: %w", err)
	}
	return ParseSmapsRollup(b)
}
