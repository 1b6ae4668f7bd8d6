package check

import "testing"

func TestParseKubeVersion(t *testing.T) {
	tests := []struct {
		git, major, minor string
		want              KubeVersion
		err               bool
	}{
		{"v1.36.3", "1", "36", KubeVersion{1, 36}, false},
		{"v1.29.3-gke.1200", "1", "29+", KubeVersion{1, 29}, false},
		{"", "1", "28+", KubeVersion{1, 28}, false},
		{"weird", "1", "x", KubeVersion{}, true},
		{"", "", "", KubeVersion{}, true},
		{"", "-1", "30", KubeVersion{}, true},
	}
	for _, tt := range tests {
		got, err := ParseKubeVersion(tt.git, tt.major, tt.minor)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseKubeVersion(%q, %q, %q) = %v, %v", tt.git, tt.major, tt.minor, got, err)
		}
	}
}

func TestImageTag(t *testing.T) {
	tests := map[string]string{
		"ghcr.io/trellis-mesh/controller:v1.2.3":             "v1.2.3",
		"trellis/controller:dev":                             "dev",
		"localhost:5000/trellis/controller":                  "",
		"localhost:5000/trellis/controller:v2@sha256:abcd12": "v2",
		"controller@sha256:abcd":                             "",
		"":                                                   "",
	}
	for in, want := range tests {
		if got := ImageTag(in); got != want {
			t.Errorf("ImageTag(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseIdentityMetrics(t *testing.T) {
	tests := []struct {
		in   string
		want IdentityMetrics
		err  bool
	}{
		{"trellis_identity_cert_valid 1\ntrellis_identity_cert_expiry_timestamp_seconds 1.7e+09\n", IdentityMetrics{true, 1, true, 1.7e9}, false},
		{"# TYPE trellis_identity_cert_valid gauge\ntrellis_identity_cert_valid 0\n", IdentityMetrics{HasValid: true}, false},
		{"other_metric 3\n", IdentityMetrics{}, false},
		{"trellis_identity_cert_valid NaN\n", IdentityMetrics{}, false},
		{"trellis_identity_cert_valid{\n", IdentityMetrics{}, true},
	}
	for _, tt := range tests {
		got, err := ParseIdentityMetrics([]byte(tt.in))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseIdentityMetrics(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func FuzzParseIdentityMetrics(f *testing.F) {
	f.Add([]byte("trellis_identity_cert_valid 1\ntrellis_identity_cert_expiry_timestamp_seconds 1.7e+09\n"))
	f.Add([]byte("# TYPE trellis_identity_cert_valid counter\ntrellis_identity_cert_valid{a=\"b\"} 0\n"))
	f.Add([]byte("trellis_identity_cert_valid +Inf\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := ParseIdentityMetrics(data)
		if err != nil && im != (IdentityMetrics{}) {
			t.Fatalf("error %v with a result %+v", err, im)
		}
	})
}

func FuzzParseKubeVersion(f *testing.F) {
	f.Add("v1.36.3", "1", "36")
	f.Add("", "1", "29+")
	f.Add("v99999999999999999999.1", "", "")
	f.Fuzz(func(t *testing.T, git, major, minor string) {
		v, err := ParseKubeVersion(git, major, minor)
		if err == nil && (v.Major < 0 || v.Minor < 0) {
			t.Fatalf("accepted a negative version %v", v)
		}
		if err != nil && v != (KubeVersion{}) {
			t.Fatalf("error %v with a version %v", err, v)
		}
	})
}

func FuzzImageTag(f *testing.F) {
	f.Add("ghcr.io/trellis-mesh/controller:v1.2.3")
	f.Add("localhost:5000/x@sha256:ab")
	f.Fuzz(func(t *testing.T, image string) {
		tag := ImageTag(image)
		if len(tag) > len(image) {
			t.Fatalf("tag %q longer than %q", tag, image)
		}
	})
}
