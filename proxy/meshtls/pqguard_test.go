package meshtls

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The guard of issue 12, part 5: Trellis relies on Go's default TLS key
// exchange, which offers the hybrid post-quantum X25519MLKEM768 first. A
// tls.Config that pins CurvePreferences without it, or caps the version
// below TLS 1.3 (hybrid groups exist only in 1.3), or a tlsmlkem=0 GODEBUG
// setting anywhere, would quietly fall back to classical key exchange.
// TestNoClassicalPin fails on any of them in the repository.

// pqFindings returns one message per place in src that pins a classical
// key exchange.
func pqFindings(fset *token.FileSet, name string, src []byte) ([]string, error) {
	f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	var out []string
	flag := func(n ast.Node, format string, args ...any) {
		out = append(out, fmt.Sprintf("%s: %s", fset.Position(n.Pos()), fmt.Sprintf(format, args...)))
	}
	check := func(field string, value ast.Expr) {
		switch field {
		case "CurvePreferences":
			if !hasHybrid(value) {
				flag(value, "CurvePreferences pinned without tls.X25519MLKEM768")
			}
		case "MaxVersion":
			if sel, ok := value.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "VersionTLS1") && sel.Sel.Name != "VersionTLS13" {
				flag(value, "MaxVersion %s: the hybrid key exchange needs TLS 1.3", sel.Sel.Name)
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.KeyValueExpr:
			if k, ok := n.Key.(*ast.Ident); ok {
				check(k.Name, n.Value)
			}
		case *ast.AssignStmt:
			for i, lhs := range n.Lhs {
				if sel, ok := lhs.(*ast.SelectorExpr); ok && i < len(n.Rhs) {
					check(sel.Sel.Name, n.Rhs[i])
				}
			}
		}
		return true
	})
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			if strings.HasPrefix(c.Text, "//go:debug") && strings.Contains(c.Text, "tlsmlkem=0") {
				flag(c, "%s turns the hybrid key exchange off", c.Text)
			}
		}
	}
	return out, nil
}

// hasHybrid reports whether a CurvePreferences value is a literal list that
// names X25519MLKEM768; anything else (a variable, a call) cannot be
// verified here and counts as a pin.
func hasHybrid(v ast.Expr) bool {
	lit, ok := v.(*ast.CompositeLit)
	if !ok {
		return false
	}
	for _, e := range lit.Elts {
		switch e := e.(type) {
		case *ast.SelectorExpr:
			if e.Sel.Name == "X25519MLKEM768" {
				return true
			}
		case *ast.Ident:
			if e.Name == "X25519MLKEM768" {
				return true
			}
		}
	}
	return false
}

func TestPQFindings(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      int
	}{
		{"default", `var c = &tls.Config{MinVersion: tls.VersionTLS13}`, 0},
		{"pinned classical", `var c = &tls.Config{CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}`, 1},
		{"pinned with hybrid", `var c = &tls.Config{CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}}`, 0},
		{"assigned classical", `func f(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} }`, 1},
		{"assigned from a variable", `func f(c *tls.Config, v []tls.CurveID) { c.CurvePreferences = v }`, 1},
		{"capped at TLS 1.2", `var c = &tls.Config{MaxVersion: tls.VersionTLS12}`, 1},
		{"capped at TLS 1.3", `var c = &tls.Config{MaxVersion: tls.VersionTLS13}`, 0},
		{"go:debug off", "//go:debug tlsmlkem=0\npackage x", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if !strings.Contains(src, "package ") {
				src = "package x\n" + src
			}
			got, err := pqFindings(token.NewFileSet(), "x.go", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Errorf("%d findings, want %d: %v", len(got), tc.want, got)
			}
		})
	}
}

// TestNoClassicalPin walks every non-test Go file of the repository (tests
// build deliberately bad peers, such as a TLS 1.2 client the mesh must
// refuse) and every go.mod, Dockerfile, Makefile and manifest for
// tlsmlkem=0.
func TestNoClassicalPin(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	fset := token.NewFileSet()
	var findings []string
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "vendor", "node_modules", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".go") {
			files++
			if strings.HasSuffix(path, "_test.go") {
				return nil
			}
			got, err := pqFindings(fset, path, src)
			if err != nil {
				return err
			}
			findings = append(findings, got...)
			return nil
		}
		if bytes.Contains(src, []byte("tlsmlkem=0")) && isConfigFile(d.Name()) {
			findings = append(findings, path+": sets tlsmlkem=0 (turns the hybrid key exchange off)")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("only %d Go files under %s: the walk is broken", files, root)
	}
	for _, f := range findings {
		t.Error(f)
	}
}

func isConfigFile(name string) bool {
	switch {
	case name == "go.mod", name == "Makefile", strings.HasPrefix(name, "Dockerfile"),
		strings.HasSuffix(name, ".mk"), strings.HasSuffix(name, ".yaml"), strings.HasSuffix(name, ".yml"),
		strings.HasSuffix(name, ".tmpl"), strings.HasSuffix(name, ".sh"):
		return true
	}
	return false
}
