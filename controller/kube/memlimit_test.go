package kube

import (
	"io/fs"
	"testing"
)

func TestSoftMemoryLimit(t *testing.T) {
	v2 := map[string]string{"/sys/fs/cgroup/memory.max": "268435456\n"}
	for _, tc := range []struct {
		name    string
		flag    string
		env     string
		files   map[string]string
		want    int64
		wantErr bool
	}{
		{"cgroup v2 limit", "", "", v2, 241591910, false},
		{"cgroup v2 limit, auto", "auto", "", v2, 241591910, false},
		{"cgroup v2 unlimited", "", "", map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 0, false},
		{"cgroup v1 limit", "", "", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"}, 483183820, false},
		{"cgroup v1 unlimited", "", "", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"v2 wins over v1", "", "", map[string]string{"/sys/fs/cgroup/memory.max": "max", "/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912"}, 0, false},
		{"GOMEMLIMIT set wins", "", "200MiB", v2, 0, false},
		{"GOMEMLIMIT wins over the flag", "100MiB", "off", v2, 0, false},
		{"no cgroup files", "", "", nil, 0, false},
		{"garbage", "", "", map[string]string{"/sys/fs/cgroup/memory.max": "lots"}, 0, false},
		{"zero", "", "", map[string]string{"/sys/fs/cgroup/memory.max": "0"}, 0, false},
		{"flag off", "off", "", v2, 0, false},
		{"flag MiB", "150MiB", "", v2, 150 << 20, false},
		{"flag GiB", "1GiB", "", nil, 1 << 30, false},
		{"flag bytes", "1048576", "", nil, 1 << 20, false},
		{"flag KiB with space", " 512 KiB ", "", nil, 512 << 10, false},
		{"flag bad unit", "100MB", "", v2, 0, true},
		{"flag zero", "0", "", v2, 0, true},
		{"flag negative", "-1MiB", "", v2, 0, true},
		{"flag overflow", "9999999999GiB", "", v2, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "GOMEMLIMIT" {
					return tc.env
				}
				return ""
			}
			read := func(p string) ([]byte, error) {
				if v, ok := tc.files[p]; ok {
					return []byte(v), nil
				}
				return nil, fs.ErrNotExist
			}
			got, _, err := softMemoryLimit(tc.flag, getenv, read)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("softMemoryLimit(%q) = %d, %v; want %d, error %v", tc.flag, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
