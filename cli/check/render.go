package check

import (
	"encoding/json"
	"fmt"
	"io"
)

// Report is the -o json document.
type Report struct {
	Success bool     `json:"success"`
	Summary Summary  `json:"summary"`
	Checks  []Result `json:"checks"`
}

// NewReport wraps results.
func NewReport(rs []Result) Report {
	s := Summarize(rs)
	if rs == nil {
		rs = []Result{}
	}
	return Report{Success: !s.Failed(), Summary: s, Checks: rs}
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(NewReport(rs)); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

const (
	green  = "\x1b[32m"
	red    = "\x1b[31m"
	yellow = "\x1b[33m"
	faint  = "\x1b[2m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// Mark is the symbol printed for a status.
func Mark(s Status) string {
	switch s {
	case OK:
		return "✔"
	case Warn:
		return "‼"
	case Fail:
		return "✘"
	}
	return "-"
}

func markColor(s Status) string {
	switch s {
	case OK:
		return green
	case Warn:
		return yellow
	case Fail:
		return red
	}
	return faint
}

// WriteText prints results grouped under their group names, with hints and
// doc links under warnings and failures, then a summary line. color adds
// ANSI colors (only for terminals).
func WriteText(w io.Writer, rs []Result, color bool) error {
	paint := func(code, s string) string {
		if !color {
			return s
		}
		return code + s + reset
	}
	var err error
	p := func(format string, a ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, a...)
		}
	}
	group := ""
	for i, r := range rs {
		if r.Group != group {
			if i > 0 {
				p("\n")
			}
			group = r.Group
			p("%s\n", paint(bold, group))
		}
		p("%s %s", paint(markColor(r.Status), Mark(r.Status)), r.Name)
		if r.Message != "" {
			p(": %s", r.Message)
		}
		p("\n")
		if r.Status == Warn || r.Status == Fail {
			if r.Hint != "" {
				p("    hint: %s\n", r.Hint)
			}
			if r.Doc != "" {
				p("    see:  %s\n", paint(faint, r.Doc))
			}
		}
	}
	s := Summarize(rs)
	p("\n")
	switch {
	case s.Failed():
		p("%s %d failed, %s, %d passed", paint(red, Mark(Fail)), s.Fail, plural(s.Warn, "warning"), s.OK)
	case s.Warn > 0:
		// Not "all checks passed": a warning is something to act on.
		p("%s %d passed, %s", paint(yellow, Mark(Warn)), s.OK, plural(s.Warn, "warning"))
	default:
		p("%s all %s passed", paint(green, Mark(OK)), plural(s.OK, "check"))
	}
	if s.Skip > 0 {
		p(", %d skipped", s.Skip)
	}
	p("\n")
	return err
}

// plural is "1 warning", "2 warnings".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
