package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// The machine-wide kernel settings the clusters change (vm/*, kernel/*,
// and the host's ip_forward, which routes between the clusters) are
// shared by every cluster on the machine: the first `up` records them in
// machineFile and the last `down` puts them back. Recorded per cluster,
// a cluster that came up second would record the first one's values and
// put those back after the first had gone.
const machineFile = "/var/tmp/trellis-clusters.json"

// machineSysctls are read and written in the host's namespaces.
var machineSysctls = []string{
	"net/ipv4/ip_forward",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

type machineRecord struct {
	Clusters []string          `json:"clusters"` // up, or coming up
	Sysctls  map[string]string `json:"sysctls"`  // values before the first of them
}

// machineSettings are the record's file, the settings it holds and where
// they live (/proc/sys; a directory of files in tests).
type machineSettings struct {
	file    string
	keys    []string
	procSys string
}

var theMachine = machineSettings{file: machineFile, keys: machineSysctls, procSys: "/proc/sys"}

func joinMachine(name string) error  { return theMachine.join(name) }
func leaveMachine(name string) error { return theMachine.leave(name) }

// join adds cluster name to the record, recording the settings if it is
// the first.
func (m machineSettings) join(name string) error {
	return m.withRecord(func(r *machineRecord) error {
		if len(r.Clusters) == 0 {
			r.Sysctls = readSysctlsAt(m.procSys, m.keys)
		}
		if !slices.Contains(r.Clusters, name) {
			r.Clusters = append(r.Clusters, name)
		}
		return nil
	})
}

// leave removes cluster name from the record and, if it was the last,
// puts the settings back.
func (m machineSettings) leave(name string) error {
	return m.withRecord(func(r *machineRecord) error {
		r.Clusters = slices.DeleteFunc(r.Clusters, func(c string) bool { return c == name })
		if len(r.Clusters) > 0 {
			return nil
		}
		var problems []string
		for _, k := range slices.Sorted(maps.Keys(r.Sysctls)) {
			if err := writeSysctlAt(m.procSys, k, r.Sysctls[k]); err != nil {
				problems = append(problems, err.Error())
			}
		}
		r.Sysctls = nil
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})
}

// withRecord runs f on the record under an exclusive lock and saves it
// (removes the file when no cluster is left).
func (m machineSettings) withRecord(f func(*machineRecord) error) error {
	lock, err := os.OpenFile(m.file+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", m.file, err)
	}
	var r machineRecord
	if b, err := os.ReadFile(m.file); err == nil {
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w (remove it if no cluster is up)", m.file, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ferr := f(&r)
	if len(r.Clusters) == 0 {
		if err := os.Remove(m.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return ferr
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(m.file, b, 0o644); err != nil {
		return err
	}
	return ferr
}

func readSysctls(keys []string) map[string]string { return readSysctlsAt("/proc/sys", keys) }

func readSysctlsAt(procSys string, keys []string) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		if b, err := os.ReadFile(filepath.Join(procSys, k)); err == nil {
			m[k] = strings.TrimSpace(string(b))
		}
	}
	return m
}

// writeSysctl sets k to v if it is not already v.
func writeSysctl(k, v string) error { return writeSysctlAt("/proc/sys", k, v) }

func writeSysctlAt(procSys, k, v string) error {
	p := filepath.Join(procSys, k)
	cur, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(cur)) == v {
		return nil
	}
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		return fmt.Errorf("restore %s=%s: %w", k, v, err)
	}
	return nil
}
