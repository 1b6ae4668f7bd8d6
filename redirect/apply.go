package redirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Runner runs a program with stdin and returns its stdout. Exec runs it in
// the current network namespace; InNetns (linux) in another one.
type Runner interface {
	Run(ctx context.Context, stdin string, name string, args ...string) ([]byte, error)
}

// Exec runs programs in the caller's network namespace.
type Exec struct{}

// Run implements Runner.
func (Exec) Run(ctx context.Context, stdin, name string, args ...string) ([]byte, error) {
	return runCmd(exec.CommandContext(ctx, name, args...), stdin)
}

func runCmd(cmd *exec.Cmd, stdin string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// Result says what Apply did for one family.
type Result struct {
	Family Family
	// Rules per chain name, as listed back after applying.
	Rules map[string][]string
	// JumpsAdded and JumpsRemoved name parent chains whose jump we added,
	// or whose duplicate jumps we removed.
	JumpsAdded   []string
	JumpsRemoved []string
}

// String is the line trellis-init prints.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s %d rules, %s %d rules", r.Family,
		PreroutingChain, len(r.Rules[PreroutingChain]), OutputChain, len(r.Rules[OutputChain]))
	if len(r.JumpsAdded) > 0 {
		fmt.Fprintf(&b, "; added jumps from %s", strings.Join(r.JumpsAdded, ", "))
	} else {
		b.WriteString("; jumps already present")
	}
	if len(r.JumpsRemoved) > 0 {
		fmt.Fprintf(&b, "; removed duplicate jumps from %s", strings.Join(r.JumpsRemoved, ", "))
	}
	return b.String()
}

// Apply (re)creates our chains for one family, makes sure each built-in
// chain holds exactly one jump to them, then lists everything back and
// checks it. Running it again gives the same rules.
func Apply(ctx context.Context, r Runner, c Config, f Family) (Result, error) {
	res := Result{Family: f}
	if err := c.Validate(); err != nil {
		return res, fmt.Errorf("invalid redirection config: %w", err)
	}
	present, err := countJumps(ctx, r, c, f)
	if err != nil {
		return res, err
	}
	input := Render(c, f, present)
	if _, err := r.Run(ctx, input, f.Restore(), "-w", "--noflush"); err != nil {
		return res, fmt.Errorf("%s: applying rules: %w", f, err)
	}
	for _, ch := range Chains(c, f) {
		switch n := present[ch.Parent]; {
		case n == 0:
			res.JumpsAdded = append(res.JumpsAdded, ch.Parent)
		case n > 1:
			res.JumpsRemoved = append(res.JumpsRemoved, ch.Parent)
		}
	}
	res.Rules, err = Verify(ctx, r, c, f)
	return res, err
}

// countJumps returns how many jumps to our chains each parent chain holds.
func countJumps(ctx context.Context, r Runner, c Config, f Family) (map[string]int, error) {
	t, err := listTable(ctx, r, f)
	if err != nil {
		return nil, err
	}
	present := map[string]int{}
	for _, ch := range Chains(c, f) {
		present[ch.Parent] = count(t.rules[ch.Parent], ch.Jump)
	}
	return present, nil
}

// ErrNotInstalled wraps verification failures, so callers can tell "rules
// are missing or wrong" from "could not run iptables".
var ErrNotInstalled = errors.New("redirection rules are not in place")

// Verify lists the nat table and compares our chains and their jumps with
// the rule set for c. It returns the rules found, per chain.
func Verify(ctx context.Context, r Runner, c Config, f Family) (map[string][]string, error) {
	t, err := listTable(ctx, r, f)
	if err != nil {
		return nil, err
	}
	found := map[string][]string{}
	var problems []string
	for _, ch := range Chains(c, f) {
		if n := count(t.rules[ch.Parent], ch.Jump); n != 1 {
			problems = append(problems, fmt.Sprintf("%s has %d jumps %q, want exactly 1", ch.Parent, n, ch.Jump))
		}
		if !t.chains[ch.Name] {
			problems = append(problems, fmt.Sprintf("chain %s does not exist", ch.Name))
			continue
		}
		rules := t.rules[ch.Name]
		found[ch.Name] = rules
		if !slices.Equal(rules, ch.Rules) {
			problems = append(problems, fmt.Sprintf("chain %s holds:\n  %s\nwant:\n  %s",
				ch.Name, strings.Join(orNone(rules), "\n  "), strings.Join(ch.Rules, "\n  ")))
		}
	}
	if len(problems) > 0 {
		return found, fmt.Errorf("%w (%s nat table): %s", ErrNotInstalled, f, strings.Join(problems, "; "))
	}
	return found, nil
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"(no rules)"}
	}
	return s
}

func count(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}

// table is the nat table as `iptables -t nat -S` lists it.
type table struct {
	chains map[string]bool     // user-defined chains (-N)
	rules  map[string][]string // "-A CHAIN ..." lines per chain, in order
}

// listTable lists the whole nat table in one call: listing a single
// missing chain fails with messages that differ between iptables backends.
func listTable(ctx context.Context, r Runner, f Family) (table, error) {
	out, err := r.Run(ctx, "", f.Iptables(), "-w", "-t", "nat", "-S")
	if err != nil {
		return table{}, fmt.Errorf("%s: listing the nat table: %w", f, err)
	}
	return parseTable(string(out)), nil
}

func parseTable(s string) table {
	t := table{chains: map[string]bool{}, rules: map[string][]string{}}
	for l := range strings.SplitSeq(s, "\n") {
		// Collapse whitespace so a different spacing is not a mismatch.
		fields := strings.Fields(l)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "-N":
			t.chains[fields[1]] = true
		case "-A":
			t.rules[fields[1]] = append(t.rules[fields[1]], strings.Join(fields, " "))
		}
	}
	return t
}

// FamilyAvailable reports whether the family's nat table can be used here,
// with the reason when not (no binary, no kernel support).
func FamilyAvailable(ctx context.Context, r Runner, f Family) error {
	if _, err := r.Run(ctx, "", f.Iptables(), "-w", "-t", "nat", "-S", "OUTPUT"); err != nil {
		return err
	}
	return nil
}
