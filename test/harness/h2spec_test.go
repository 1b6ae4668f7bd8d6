package harness

import (
	"slices"
	"strings"
	"testing"
)

// junitSample has the shape h2spec v2.2.1 writes: nested suites per
// section, classname the description, failures as <error> (its *TestError
// is not matched by the reporter's value-type switch) or <failure>.
const junitSample = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="3.5. HTTP/2 Connection Preface" package="http2/3.5" id="3.5" tests="2" skipped="0" failures="0" errors="1">
    <testcase package="http2/3.5" classname="Sends client connection preface" time="0.0010"></testcase>
    <testcase package="http2/3.5" classname="Sends invalid connection preface" time="0.0020">
      <error>Connection closed&#xA;Error: unexpected EOF</error>
    </testcase>
  </testsuite>
  <testsuite name="6.5.3. Settings Synchronization" package="http2/6.5.3" id="6.5.3" tests="2" skipped="1" failures="1" errors="0">
    <testcase package="http2/6.5.3" classname="Sends multiple values" time="0.0010">
      <failure>Expect:&#xA;DATA Frame&#xA;Actual:&#xA;Connection closed</failure>
    </testcase>
    <testcase package="http2/6.5.3" classname="Sends a SETTINGS frame without ACK flag" time="0.0010">
      <skipped></skipped>
    </testcase>
  </testsuite>
</testsuites>`

func TestParseH2specJUnit(t *testing.T) {
	cases, err := ParseH2specJUnit(strings.NewReader(junitSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ id, outcome, desc string }{
		{"http2/3.5/1", H2specPassed, "Sends client connection preface"},
		{"http2/3.5/2", H2specFailed, "Sends invalid connection preface"},
		{"http2/6.5.3/1", H2specFailed, "Sends multiple values"},
		{"http2/6.5.3/2", H2specSkipped, "Sends a SETTINGS frame without ACK flag"},
	}
	if len(cases) != len(want) {
		t.Fatalf("got %d cases %+v, want %d", len(cases), cases, len(want))
	}
	for i, w := range want {
		c := cases[i]
		if c.ID != w.id || c.Outcome != w.outcome || c.Desc != w.desc {
			t.Errorf("case %d = %+v, want %+v", i, c, w)
		}
	}
	if !strings.Contains(cases[1].Detail, "unexpected EOF") || !strings.Contains(cases[2].Detail, "Connection closed") {
		t.Errorf("failure details lost: %q / %q", cases[1].Detail, cases[2].Detail)
	}
	run := H2specRun{Cases: cases}
	if p, f, s := run.Counts(); p != 1 || f != 2 || s != 1 {
		t.Errorf("Counts = %d passed, %d failed, %d skipped, want 1, 2, 1", p, f, s)
	}
}

func TestParseH2specJUnitRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"not xml":    "Error: dial tcp 127.0.0.1:1: connection refused",
		"no case":    `<testsuites><testsuite package="http2/3.5"></testsuite></testsuites>`,
		"duplicates": `<testsuites><testsuite package="a"><testcase/></testsuite><testsuite package="a"><testcase/></testsuite></testsuites>`,
	} {
		if cases, err := ParseH2specJUnit(strings.NewReader(doc)); err == nil {
			t.Errorf("%s: parsed %+v, want an error", name, cases)
		}
	}
}

func TestCompareH2spec(t *testing.T) {
	run := H2specRun{Cases: []H2specCase{
		{ID: "a/1", Outcome: H2specPassed},
		{ID: "a/2", Outcome: H2specFailed},
		{ID: "a/3", Outcome: H2specSkipped},
		{ID: "a/4", Outcome: H2specPassed},
	}}
	tests := []struct {
		name         string
		baseline     []string
		regressions  []string
		improvements []string
	}{
		{"same", []string{"a/1", "a/4"}, nil, nil},
		{"failed now", []string{"a/1", "a/2", "a/4"}, []string{"a/2"}, nil},
		{"skipped now", []string{"a/1", "a/3", "a/4"}, []string{"a/3"}, nil},
		{"gone from the run", []string{"a/1", "a/4", "b/9"}, []string{"b/9"}, nil},
		{"new passes", []string{"a/1"}, nil, []string{"a/4"}},
		{"empty baseline", nil, nil, []string{"a/1", "a/4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			passing := map[string]bool{}
			for _, id := range tt.baseline {
				passing[id] = true
			}
			reg, imp := CompareH2spec(passing, run)
			if got := ids(reg); !slices.Equal(got, tt.regressions) {
				t.Errorf("regressions = %v, want %v", got, tt.regressions)
			}
			if got := ids(imp); !slices.Equal(got, tt.improvements) {
				t.Errorf("improvements = %v, want %v", got, tt.improvements)
			}
		})
	}
}

func TestH2specBaselineRoundTrip(t *testing.T) {
	var b strings.Builder
	err := WriteH2specBaseline(&b, "line one\nline two", map[string][]string{
		"outbound": {"http2/5.1/2", "generic/1/1"},
		"inbound":  {"hpack/2.3/1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "# line one\n# line two\ninbound hpack/2.3/1\noutbound generic/1/1\noutbound http2/5.1/2\n"
	if b.String() != want {
		t.Fatalf("wrote\n%s\nwant\n%s", b.String(), want)
	}
	base, err := ReadH2specBaseline(strings.NewReader(b.String() + "\n  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(base) != 2 || !base["outbound"]["generic/1/1"] || !base["outbound"]["http2/5.1/2"] || !base["inbound"]["hpack/2.3/1"] {
		t.Fatalf("read back %v", base)
	}
	if _, err := ReadH2specBaseline(strings.NewReader("outbound\n")); err == nil {
		t.Error("a line without a case ID was accepted")
	}
}

func ids(cs []H2specCase) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}
