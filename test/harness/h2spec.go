package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// H2specPackage is the HTTP/2 conformance tool, pinned as a tool in go.mod
// (so `go tool h2spec` works and the module cache has it offline).
const H2specPackage = "github.com/summerwind/h2spec/cmd/h2spec"

// BuildH2spec compiles h2spec, at the version go.mod pins, into dir.
func BuildH2spec(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "h2spec")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, H2specPackage)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", H2specPackage, err, b)
	}
	return out, nil
}

// H2specCase is the outcome of one h2spec test case.
type H2specCase struct {
	ID      string // e.g. "http2/6.5.3/2", h2spec's own section/number form
	Desc    string
	Outcome string // "passed", "failed" or "skipped"
	Detail  string // what h2spec expected and saw, for failures
}

// Outcomes of a case.
const (
	H2specPassed  = "passed"
	H2specFailed  = "failed"
	H2specSkipped = "skipped"
)

// H2specRun is the result of h2spec against one target.
type H2specRun struct {
	Cases  []H2specCase
	Output string // h2spec's own console report
}

// Counts returns how many cases passed, failed and were skipped.
func (r H2specRun) Counts() (passed, failed, skipped int) {
	for _, c := range r.Cases {
		switch c.Outcome {
		case H2specPassed:
			passed++
		case H2specFailed:
			failed++
		default:
			skipped++
		}
	}
	return passed, failed, skipped
}

// Passing returns the IDs of the cases that passed, sorted.
func (r H2specRun) Passing() []string {
	var ids []string
	for _, c := range r.Cases {
		if c.Outcome == H2specPassed {
			ids = append(ids, c.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// RunH2spec runs h2spec against host:port in plain text (h2c with prior
// knowledge), each case with timeoutSec seconds to get its answer: every
// (non-strict) case, or only the one case named by only (an ID such as
// "http2/5.1/9"). The :authority h2spec sends is host:port.
func RunH2spec(ctx context.Context, bin, host string, port, timeoutSec int, reportDir, only string) (H2specRun, error) {
	f, err := os.CreateTemp(reportDir, fmt.Sprintf("h2spec-%s-%d-*.xml", host, port))
	if err != nil {
		return H2specRun{}, err
	}
	report := f.Name()
	f.Close()
	args := []string{"-h", host, "-p", strconv.Itoa(port), "-o", strconv.Itoa(timeoutSec), "-j", report}
	if only != "" {
		args = append(args, only)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// h2spec exits 1 when any case failed; only a missing or empty report
	// is an error.
	runErr := cmd.Run()
	data, err := os.ReadFile(report)
	if err == nil && len(data) == 0 {
		err = errors.New("empty report")
	}
	if err != nil {
		return H2specRun{Output: out.String()}, fmt.Errorf("h2spec against %s:%d wrote no report (exit: %v): %w\n%s", host, port, runErr, err, out.String())
	}
	cases, err := ParseH2specJUnit(bytes.NewReader(data))
	if err != nil {
		return H2specRun{Output: out.String()}, err
	}
	if only != "" {
		// The report numbers the cases that ran, so the one case is "/1".
		if len(cases) != 1 {
			return H2specRun{Output: out.String()}, fmt.Errorf("h2spec %s: %d cases in the report, want 1", only, len(cases))
		}
		cases[0].ID = only
	}
	return H2specRun{Cases: cases, Output: out.String()}, nil
}

type junitReport struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			ClassName string    `xml:"classname,attr"`
			Failure   *innerXML `xml:"failure"`
			Error     *innerXML `xml:"error"`
			Skipped   *innerXML `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

type innerXML struct {
	Text string `xml:",chardata"`
}

// ParseH2specJUnit reads h2spec's JUnit report. A suite is one section
// (package "http2/6.5.3"); its cases are numbered from 1 in order, which is
// how h2spec itself names them ("http2/6.5.3/2").
func ParseH2specJUnit(r io.Reader) ([]H2specCase, error) {
	var rep junitReport
	if err := xml.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("parsing the h2spec JUnit report: %w", err)
	}
	var out []H2specCase
	seen := map[string]bool{}
	for _, s := range rep.Suites {
		if s.Package == "" {
			continue
		}
		for i, c := range s.Cases {
			hc := H2specCase{ID: fmt.Sprintf("%s/%d", s.Package, i+1), Desc: c.ClassName, Outcome: H2specPassed}
			switch {
			case c.Failure != nil:
				hc.Outcome, hc.Detail = H2specFailed, strings.TrimSpace(c.Failure.Text)
			case c.Error != nil:
				hc.Outcome, hc.Detail = H2specFailed, strings.TrimSpace(c.Error.Text)
			case c.Skipped != nil:
				hc.Outcome = H2specSkipped
			}
			if seen[hc.ID] {
				return nil, fmt.Errorf("h2spec JUnit report: case %s twice", hc.ID)
			}
			seen[hc.ID] = true
			out = append(out, hc)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("h2spec JUnit report has no test case")
	}
	return out, nil
}

// H2specBaseline is, per target name, the set of case IDs that passed when
// the baseline was recorded.
type H2specBaseline map[string]map[string]bool

// ReadH2specBaseline parses lines "<target> <case id>"; blank lines and
// lines starting with # are ignored.
func ReadH2specBaseline(r io.Reader) (H2specBaseline, error) {
	b := H2specBaseline{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("h2spec baseline line %d: want \"<target> <case id>\", got %q", n, line)
		}
		if b[f[0]] == nil {
			b[f[0]] = map[string]bool{}
		}
		b[f[0]][f[1]] = true
	}
	return b, sc.Err()
}

// WriteH2specBaseline renders runs (target -> passing IDs) in the format
// ReadH2specBaseline reads, targets and IDs sorted.
func WriteH2specBaseline(w io.Writer, header string, passing map[string][]string) error {
	bw := bufio.NewWriter(w)
	for line := range strings.SplitSeq(strings.TrimSpace(header), "\n") {
		fmt.Fprintf(bw, "# %s\n", line)
	}
	for _, t := range slices.Sorted(maps.Keys(passing)) {
		ids := slices.Clone(passing[t])
		slices.Sort(ids)
		for _, id := range ids {
			fmt.Fprintf(bw, "%s %s\n", t, id)
		}
	}
	return bw.Flush()
}

// CompareH2spec splits a run against the baseline's passing set:
// regressions passed in the baseline and do not now (failed, skipped or
// missing from the run); improvements pass now and were not in it.
func CompareH2spec(passing map[string]bool, run H2specRun) (regressions []H2specCase, improvements []H2specCase) {
	byID := make(map[string]H2specCase, len(run.Cases))
	for _, c := range run.Cases {
		byID[c.ID] = c
		if c.Outcome == H2specPassed && !passing[c.ID] {
			improvements = append(improvements, c)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(passing)) {
		c, ok := byID[id]
		if !ok {
			regressions = append(regressions, H2specCase{ID: id, Outcome: "missing", Detail: "not in this run's report"})
			continue
		}
		if c.Outcome != H2specPassed {
			regressions = append(regressions, c)
		}
	}
	return regressions, improvements
}
