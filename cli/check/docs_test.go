package check

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestEveryCheckIsDocumented: each hint links to a heading of
// docs/check.md that exists.
func TestEveryCheckIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/check.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range slices.Concat(PreChecks(), PostChecks(), ProxyChecks(), MulticlusterChecks()) {
		if c.Anchor == "" || !strings.Contains(string(doc), "\n### "+c.Anchor+"\n") {
			t.Errorf("check %q: no heading %q in docs/check.md", c.Name, c.Anchor)
		}
	}
}
