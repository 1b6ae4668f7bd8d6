package check

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func fixed(s Status, msg string) func(context.Context, *Env) Outcome {
	return func(context.Context, *Env) Outcome {
		o := Outcome{Status: s, Message: msg}
		if s == Warn || s == Fail {
			o.Hint = "do the thing"
		}
		return o
	}
}

func TestRunStopsAfterFatal(t *testing.T) {
	ran := false
	checks := []Check{
		{Group: "g", Name: "first", Anchor: "first", Run: fixed(Warn, "meh")},
		{Group: "g", Name: "gate", Anchor: "gate", Fatal: true, Run: fixed(Fail, "down")},
		{Group: "h", Name: "after", Anchor: "after", Run: func(context.Context, *Env) Outcome { ran = true; return ok("x") }},
	}
	rs := Run(context.Background(), &Env{}, checks)
	if ran {
		t.Fatal("a check after a failed fatal one ran")
	}
	want := []Status{Warn, Fail, Skip}
	for i, r := range rs {
		if r.Status != want[i] {
			t.Errorf("result %d: %s, want %s", i, r.Status, want[i])
		}
	}
	if rs[2].Message != `not run: "gate" failed` {
		t.Errorf("skip message %q", rs[2].Message)
	}
	if s := Summarize(rs); !s.Failed() || s.Warn != 1 || s.Skip != 1 {
		t.Errorf("summary %+v", s)
	}
}

func TestRunBoundsEachCheck(t *testing.T) {
	c := Check{Name: "slow", Anchor: "slow", Run: func(ctx context.Context, _ *Env) Outcome {
		<-ctx.Done()
		return fail("faster", "%v", ctx.Err())
	}}
	rs := Run(context.Background(), &Env{CheckTimeout: 10 * time.Millisecond}, []Check{c})
	if rs[0].Status != Fail || !strings.Contains(rs[0].Message, context.DeadlineExceeded.Error()) {
		t.Fatalf("got %+v", rs[0])
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rs = Run(ctx, &Env{}, []Check{{Name: "never", Run: fixed(OK, "")}})
	if rs[0].Status != Fail || !strings.Contains(rs[0].Message, "interrupted") {
		t.Fatalf("canceled run: %+v", rs[0])
	}
}

func sample() []Result {
	return Run(context.Background(), &Env{}, []Check{
		{Group: "kubernetes", Name: "can reach", Anchor: "kubernetes-api", Run: fixed(OK, "v1.36.3")},
		{Group: "identity", Name: "issuer", Anchor: "issuer", Run: fixed(Warn, "expires in 3.0 days")},
		{Group: "identity", Name: "anchors", Anchor: "trust-anchors", Run: fixed(Fail, "expired")},
	})
}

func TestJSONShape(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sample()); err != nil {
		t.Fatal(err)
	}
	// Decode into generic maps: the shape is the contract, not the Go type.
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String())
	}
	if doc["success"] != false {
		t.Errorf("success = %v", doc["success"])
	}
	sum := doc["summary"].(map[string]any)
	if sum["ok"] != 1.0 || sum["warn"] != 1.0 || sum["fail"] != 1.0 || sum["skip"] != 0.0 {
		t.Errorf("summary = %v", sum)
	}
	checks := doc["checks"].([]any)
	if len(checks) != 3 {
		t.Fatalf("%d checks", len(checks))
	}
	okc, failc := checks[0].(map[string]any), checks[2].(map[string]any)
	for _, k := range []string{"group", "name", "status", "message"} {
		if _, found := okc[k]; !found {
			t.Errorf("ok check lacks %q: %v", k, okc)
		}
	}
	if _, found := okc["hint"]; found {
		t.Errorf("ok check has a hint: %v", okc)
	}
	if failc["status"] != "fail" || failc["hint"] != "do the thing" || failc["doc"] != DocBase+"#trust-anchors" || failc["message"] != "expired" {
		t.Errorf("fail check = %v", failc)
	}
	// No results is still a list, not null.
	buf.Reset()
	if err := WriteJSON(&buf, nil); err != nil || !strings.Contains(buf.String(), `"checks": []`) {
		t.Errorf("empty report: %v %s", err, buf.String())
	}
}

func TestWriteText(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteText(&buf, sample(), false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"kubernetes\n✔ can reach: v1.36.3\n",
		"identity\n‼ issuer: expires in 3.0 days\n    hint: do the thing\n    see:  " + DocBase + "#issuer\n",
		"✘ anchors: expired\n",
		"✘ 1 failed, 1 warning, 1 passed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colors without a terminal:\n%s", out)
	}
	buf.Reset()
	if err := WriteText(&buf, sample(), true); err != nil || !strings.Contains(buf.String(), "\x1b[31m✘\x1b[0m") {
		t.Errorf("no red cross with color: %v\n%s", err, buf.String())
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrors(t *testing.T) {
	if err := WriteText(failingWriter{}, sample(), false); err == nil {
		t.Error("WriteText hid a write error")
	}
	if err := WriteJSON(failingWriter{}, sample()); err == nil {
		t.Error("WriteJSON hid a write error")
	}
}
