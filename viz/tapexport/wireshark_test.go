package tapexport

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPcapngInWireshark opens an export with the real Wireshark (tshark,
// Debian's tshark package; skipped without it): every exchange dissected
// as HTTP, two on the same address pair as two connections, and no TCP
// analysis complaint beyond the port reuse that says so.
func TestPcapngInWireshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("no tshark:", err)
	}
	xs := sample()[:2]
	again := xs[0]
	again.Start = again.Start.Add(500 * time.Millisecond)
	again.Path = "/books/2"
	xs = append(xs, again)
	all := assemble(t, xs)
	var buf bytes.Buffer
	pw, _ := NewPcapWriter(&buf)
	for _, x := range all {
		if err := pw.Write(x); err != nil {
			t.Fatal(err)
		}
	}
	if err := pw.Flush(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tap.pcapng")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		out, err := exec.Command(tshark, append([]string{"-r", file, "-d", "tcp.port==7001,http"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tshark %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	fields := run("-Y", "http", "-T", "fields", "-e", "http.request.method", "-e", "http.request.uri", "-e", "http.response.code")
	var got []string
	for _, l := range strings.Split(fields, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Running as user") {
			got = append(got, strings.Join(strings.Fields(l), " "))
		}
	}
	want := []string{"GET /books?limit=3&x", "200", "POST /authors", "201", "GET /books/2", "200"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("tshark dissected\n  %q\nwant\n  %q", got, want)
	}
	expert := run("-q", "-z", "expert")
	for _, bad := range []string{"retransmission", "Malformed", "checksum", "ACKed segment that wasn't captured", "Previous segment not captured"} {
		if strings.Contains(expert, bad) {
			t.Errorf("tshark's expert info says %q:\n%s", bad, expert)
		}
	}
	t.Logf("tshark expert info:\n%s", expert)
}
