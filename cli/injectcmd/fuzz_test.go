package injectcmd

import (
	"bytes"
	"io"
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

func FuzzRun(f *testing.F) {
	app, err := os.ReadFile("testdata/app.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(app, true)
	f.Add([]byte("kind: Pod\nmetadata: {annotations: {trellis.io/inject: enabled}}\n"), false)
	f.Add([]byte("kind: List\nitems: [1, {kind: Job, spec: {template: 3}}]\n"), true)
	f.Add([]byte("--- x\n"), false)
	f.Add([]byte("{\"kind\":\"CronJob\",\"spec\":{\"jobTemplate\":{\"spec\":{\"template\":{\"spec\":{\"containers\":[]}}}}}}"), true)
	f.Fuzz(func(t *testing.T, in []byte, force bool) {
		var out bytes.Buffer
		if err := Run(bytes.NewReader(in), &out, io.Discard, Options{Force: force}); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		// Whatever was written reads back as YAML, and a second pass
		// changes nothing.
		for _, d := range splitDocs(t, out.String()) {
			if _, err := yaml.YAMLToJSON(d); err != nil {
				t.Fatalf("output document does not parse: %v\n%s", err, d)
			}
		}
		var again bytes.Buffer
		if err := Run(bytes.NewReader(out.Bytes()), &again, io.Discard, Options{Force: force}); err != nil {
			t.Fatalf("second pass: %v", err)
		}
		if !bytes.Equal(again.Bytes(), out.Bytes()) {
			t.Fatalf("second pass changed the output:\n%s\n---- vs ----\n%s", out.Bytes(), again.Bytes())
		}
	})
}
