package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Stat
		wantErr bool
	}{
		{"plain", "1234 (nginx) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 100 1000 200", Stat{PPID: 1, CPU: 2810 * time.Millisecond}, false},
		{"name with spaces and parens", "42 (a (b) c) R 7 42 42 0 -1 0 0 0 0 0 3 4 0 0", Stat{PPID: 7, CPU: 70 * time.Millisecond}, false},
		{"no paren", "42 nginx R 7", Stat{}, true},
		{"too short", "42 (x) R 7 1 2", Stat{}, true},
		{"bad utime", "42 (x) R 7 42 42 0 -1 0 0 0 0 0 x 4 0 0", Stat{}, true},
		{"negative stime", "42 (x) R 7 42 42 0 -1 0 0 0 0 0 1 -4 0 0", Stat{}, true},
		{"huge", "42 (x) R 7 42 42 0 -1 0 0 0 0 0 9223372036854775807 1 0 0", Stat{}, true},
	}
	for _, tt := range tests {
		got, err := ParseStat([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Memory
		wantErr bool
	}{
		{"real shape", "Name:\tx\nVmPeak:\t  10 kB\nVmHWM:\t    9000 kB\nVmRSS:\t    8000 kB\nThreads:\t1\n", Memory{RSS: 8000 * 1024, HWM: 9000 * 1024}, false},
		{"missing HWM", "VmRSS:\t1 kB\n", Memory{}, true},
		{"bad unit", "VmRSS:\t1 MB\nVmHWM:\t1 kB\n", Memory{}, true},
		{"bad number", "VmRSS:\tx kB\nVmHWM:\t1 kB\n", Memory{}, true},
		{"empty", "", Memory{}, true},
	}
	for _, tt := range tests {
		got, err := ParseStatus([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// Reading this very process exercises the real /proc formats.
func TestReadSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != os.Getppid() {
		t.Errorf("ppid %d, want %d", st.PPID, os.Getppid())
	}
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("memory %+v: want 0 < RSS <= HWM", m)
	}
	kids, err := Children(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range kids {
		found = found || k == os.Getpid()
	}
	if !found {
		t.Errorf("Children(%d) = %v lacks this process %d", os.Getppid(), kids, os.Getpid())
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1234 (nginx) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 100 1000 200"))
	f.Add([]byte("42 (a (b) c) R 7 42 42 0 -1 0 0 0 0 0 3 4 0 0"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStat(b)
		if err == nil && st.CPU < 0 {
			t.Fatalf("negative CPU %v from %q", st.CPU, b)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("VmHWM:\t    9000 kB\nVmRSS:\t    8000 kB\n"))
	f.Add([]byte("VmRSS: 1 kB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseStatus(b)
		if err == nil && (m.RSS < 0 || m.HWM < 0) {
			t.Fatalf("negative memory %+v from %q", m, b)
		}
	})
}

func TestParseSystemCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    SystemCPU
		wantErr bool
	}{
		{"real shape", "cpu  100 1 20 1000 5 2 3 4 0 0\ncpu0 50 0 10 500 2 1 1 2 0 0\n", SystemCPU{Busy: 1250 * time.Millisecond, Total: 11350 * time.Millisecond}, false},
		{"per-cpu first", "cpu0 1 2 3 4 5 6 7 8\n", SystemCPU{}, true},
		{"short", "cpu 1 2 3\n", SystemCPU{}, true},
		{"bad", "cpu 1 2 3 x 5 6 7 8\n", SystemCPU{}, true},
		{"empty", "", SystemCPU{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSystemCPU([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
	if _, err := ReadSystemCPU(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}

func FuzzParseSystemCPU(f *testing.F) {
	f.Add([]byte("cpu  100 1 20 1000 5 2 3 4 0 0\n"))
	f.Add([]byte("cpu 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSystemCPU(b)
		if err == nil && (s.Busy < 0 || s.Total < s.Busy) {
			t.Fatalf("bad result %+v from %q", s, b)
		}
	})
}

func TestParseSmapsRollup(t *testing.T) {
	const real = `00400000-7ffd5c5f1000 ---p 00000000 00:00 0                      [rollup]
Rss:               13548 kB
Pss:               13500 kB
Pss_Anon:           6100 kB
Pss_File:           7400 kB
Anonymous:          6144 kB
Swap:                  0 kB
`
	tests := []struct {
		name    string
		in      string
		want    Rollup
		wantErr bool
	}{
		{"real", real, Rollup{RSS: 13548 << 10, Anonymous: 6144 << 10, File: (13548 - 6144) << 10}, false},
		{"no anonymous", "Rss: 5 kB\n", Rollup{}, true},
		{"anonymous over rss", "Rss: 5 kB\nAnonymous: 6 kB\n", Rollup{}, true},
		{"bad unit", "Rss: 5 MB\nAnonymous: 1 kB\n", Rollup{}, true},
		{"negative", "Rss: -5 kB\nAnonymous: 1 kB\n", Rollup{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSmapsRollup([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestReadSmapsRollupSelf(t *testing.T) {
	r, err := ReadSmapsRollup(os.Getpid())
	if err != nil {
		t.Skipf("no smaps_rollup here: %v", err)
	}
	if r.RSS <= 0 || r.Anonymous <= 0 || r.File <= 0 {
		t.Errorf("own rollup %+v: want every part positive", r)
	}
}
