package grafana

import (
	"embed"
	"io/fs"
	"path"
	"sort"
)

//go:embed dashboards/*.json
var files embed.FS

// Files returns the committed dashboards by file name (uid.json), as
// Grafana imports them.
func Files() map[string][]byte {
	out := map[string][]byte{}
	names, _ := fs.Glob(files, "dashboards/*.json")
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err == nil {
			out[path.Base(n)] = b
		}
	}
	return out
}

// FileName is where a dashboard is committed.
func FileName(d Dashboard) string { return d.UID + ".json" }

// sortedNames returns m's keys in order.
func sortedNames(m map[string][]byte) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
