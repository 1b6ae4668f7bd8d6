package topcmd

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trellis-mesh/trellis/viz/top"
)

// Snapshot is what -o json and yaml print at each refresh.
type Snapshot struct {
	Time   time.Time `json:"time"`
	Target string    `json:"target"`
	Rows   []top.Row `json:"rows"`
	// Pending requests have started but not ended yet.
	Pending int `json:"pending"`
	// Ended is set once the tap stream ended ("ok" or why).
	Ended string `json:"ended,omitempty"`
}

// table renders rows as the text table.
func table(w io.Writer, rows []top.Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tMETHOD\tPATH\tCOUNT\tBEST\tWORST\tLAST\tSUCCESS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%.1f%%\n", r.Source, r.Destination, r.Method, r.Path, r.Count,
			latency(r.Best), latency(r.Worst), latency(r.Last), 100*r.SuccessRate)
	}
	return tw.Flush()
}

// latency rounds for a column: 3 significant digits at most.
func latency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case ms < 1000:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	}
	return strconv.FormatFloat(ms/1000, 'f', 2, 64) + "s"
}

// frame is one screen of the live view: a title, the table cut to the
// terminal (width x height), and a status line. Lines end in "\r\n" (the
// terminal is in raw mode) and each clears the rest of its line.
func frame(s Snapshot, width, height int) string {
	var b strings.Builder
	_ = table(&b, s.Rows)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	status := fmt.Sprintf("%d requests in flight; q or Ctrl-C quits", s.Pending)
	if s.Ended != "" {
		status = "tap ended: " + s.Ended + "; q or Ctrl-C quits"
	}
	head := fmt.Sprintf("trellis top %s   %s", s.Target, s.Time.Format("15:04:05"))
	if len(s.Rows) == 0 {
		lines = append(lines, "(no request finished yet)")
	}
	room := max(height-3, 1) // title, blank line, status
	if len(lines) > room {
		lines = append(lines[:room-1], fmt.Sprintf("... %d more rows", len(lines)-room+1))
	}
	out := append([]string{head, ""}, lines...)
	out = append(out, status)
	for i, l := range out {
		if width > 0 && len(l) > width {
			l = l[:width]
		}
		out[i] = l + "\x1b[K" // clear what a longer previous frame left
	}
	return "\x1b[H" + strings.Join(out, "\r\n") + "\x1b[J"
}
