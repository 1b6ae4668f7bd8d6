// Package browser drives a real headless Chromium (Debian's chromium
// package) from Go tests with chromedp: the dashboard's browser checks in
// viz/dashboard, test/e2e (the local demo) and test/k8se2e (the cluster).
//
// The browser starts with a fresh profile and everything that would reach
// the network on its own switched off (the machines running the tests
// have no network), and every console error or warning, uncaught
// exception, browser log entry (CSP violations among them) is recorded:
// Problems returns them, and a page that loads cleanly has none.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// UpdateScreenshotsEnv set to 1 makes Screenshot write into docs/images.
const UpdateScreenshotsEnv = "TRELLIS_UPDATE_SCREENSHOTS"

// Find returns the Chromium binary: $TRELLIS_CHROMIUM, else the first of
// chromium, chromium-browser, google-chrome in $PATH.
func Find() (string, error) {
	if p := os.Getenv("TRELLIS_CHROMIUM"); p != "" {
		return exec.LookPath(p)
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium, chromium-browser or google-chrome in $PATH (apt-get install -y chromium)")
}

// Require returns the browser's path. Without one the test is skipped,
// except in CI (CI=true), where it fails: CI installs chromium, so a
// missing browser there is a broken setup, not a reason to pass.
func Require(t testing.TB) string {
	t.Helper()
	p, err := Find()
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %v", err)
	}
	t.Skipf("browser test skipped: %v", err)
	return ""
}

// Browser is one headless Chromium with one tab.
type Browser struct {
	t   testing.TB
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// Start starts Chromium (Require's) and opens a tab; both end with the
// test.
func Start(t testing.TB) *Browser {
	t.Helper()
	exe := Require(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root, where the sandbox cannot start
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &Browser{t: t}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.record))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b.ctx = ctx
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil { // starts the browser and the tab
		t.Fatalf("start %s: %v", exe, err)
	}
	t.Logf("chromium %s started in %s", exe, time.Since(start).Round(time.Millisecond))
	return b
}

// record keeps what a clean page never produces. It runs on chromedp's
// reading goroutine: quick, no commands.
func (b *Browser) record(ev any) {
	var msg string
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeWarning && e.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		var args []string
		for _, a := range e.Args {
			if a.Value != nil {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		msg = fmt.Sprintf("console.%s: %s", e.Type, strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		msg = "uncaught exception: " + e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Level != cdplog.EntryLevelError && e.Entry.Level != cdplog.EntryLevelWarning {
			return
		}
		msg = fmt.Sprintf("log %s (%s): %s %s", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL)
	default:
		return
	}
	b.mu.Lock()
	b.problems = append(b.problems, msg)
	b.mu.Unlock()
}

// Problems returns the console errors and warnings, exceptions and log
// entries (CSP violations are log entries) seen so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// Context is the tab's context, for chromedp.Run.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs actions with a ceiling (the tab itself lives on).
func (b *Browser) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Eval evaluates expr in the page and decodes its value into T.
func Eval[T any](b *Browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// Screenshot writes a PNG of the whole page as name: into the repository's
// docs/images when TRELLIS_UPDATE_SCREENSHOTS=1, else into the test's temp
// directory. It returns the path.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := b.t.TempDir()
	if os.Getenv(UpdateScreenshotsEnv) == "1" {
		if dir, err = docsImages(); err != nil {
			b.t.Fatal(err)
		}
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s (%d bytes)", path, len(png))
	return path
}

// docsImages finds docs/images of the repository the test runs in.
func docsImages() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/trellis-mesh/trellis\n") {
			out := filepath.Join(dir, "docs", "images")
			return out, os.MkdirAll(out, 0o755)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("docs/images: not inside the trellis repository")
		}
		dir = parent
	}
}
