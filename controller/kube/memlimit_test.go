package kube

import (
	"io/fs"
	"testing"
)

func TestSoftMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   string
		files map[string]string
		want  int64
	}{
		{"cgroup v2 limit", "", map[string]string{"/sys/fs/cgroup/memory.max": "268435456\n"}, 241591910},
		{"cgroup v2 unlimited", "", map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 0},
		{"cgroup v1 limit", "", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"}, 483183820},
		{"cgroup v1 unlimited", "", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{"GOMEMLIMIT set wins", "200MiB", map[string]string{"/sys/fs/cgroup/memory.max": "268435456\n"}, 0},
		{"no cgroup files", "", nil, 0},
		{"garbage", "", map[string]string{"/sys/fs/cgroup/memory.max": "lots"}, 0},
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
			if got, _ := softMemoryLimit(getenv, read); got != tc.want {
				t.Errorf("softMemoryLimit = %d, want %d", got, tc.want)
			}
		})
	}
}
