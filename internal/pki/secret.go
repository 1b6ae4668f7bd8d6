package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Keys of a kubernetes.io/tls Secret as cert-manager writes it.
const (
	SecretTypeTLS  = "kubernetes.io/tls"
	SecretCertKey  = "tls.crt"
	SecretKeyKey   = "tls.key"
	SecretCAKey    = "ca.crt"
	MaxInputLength = 4 << 20 // certificates and manifests are small; refuse a mistaken huge file early
)

// TLSSecret is the content of a kubernetes.io/tls Secret: PEM certificate
// (chain), PEM private key and PEM CA bundle, cert-manager's shape.
type TLSSecret struct {
	Name      string
	Namespace string
	Cert      []byte
	Key       []byte
	CA        []byte
}

// secretManifest is the part of a core/v1 Secret Trellis reads and writes;
// a plain struct so go.mod needs no k8s.io/api.
type secretManifest struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   secretMeta        `json:"metadata"`
	Type       string            `json:"type,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`       // base64 in YAML/JSON
	StringData map[string]string `json:"stringData,omitempty"` // accepted on input only
}

type secretMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// Manifest returns the Secret as a YAML manifest for kubectl apply.
func (s TLSSecret) Manifest() ([]byte, error) {
	m := secretManifest{
		APIVersion: "v1",
		Kind:       "Secret",
		Metadata:   secretMeta{Name: s.Name, Namespace: s.Namespace},
		Type:       SecretTypeTLS,
		Data:       map[string][]byte{SecretCertKey: s.Cert, SecretKeyKey: s.Key},
	}
	if len(s.CA) > 0 {
		m.Data[SecretCAKey] = s.CA
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode secret manifest: %w", err)
	}
	return out, nil
}

// ParseTLSSecret parses a Secret manifest in YAML or JSON (as from
// `kubectl get secret -o yaml`) holding at least tls.crt or ca.crt, in
// data (base64) or stringData.
func ParseTLSSecret(data []byte) (TLSSecret, error) {
	if len(data) > MaxInputLength {
		return TLSSecret{}, fmt.Errorf("secret manifest is %d bytes, more than the %d allowed", len(data), MaxInputLength)
	}
	var m secretManifest
	if err := yaml.Unmarshal(data, &m); err != nil {
		return TLSSecret{}, fmt.Errorf("parse secret manifest: %w", err)
	}
	if m.Kind != "Secret" {
		return TLSSecret{}, fmt.Errorf("manifest kind is %q, want Secret", m.Kind)
	}
	get := func(k string) []byte {
		if v, ok := m.Data[k]; ok {
			return v
		}
		if v, ok := m.StringData[k]; ok {
			return []byte(v)
		}
		return nil
	}
	s := TLSSecret{
		Name:      m.Metadata.Name,
		Namespace: m.Metadata.Namespace,
		Cert:      get(SecretCertKey),
		Key:       get(SecretKeyKey),
		CA:        get(SecretCAKey),
	}
	if len(s.Cert) == 0 && len(s.CA) == 0 {
		return TLSSecret{}, fmt.Errorf("secret %q has neither %s nor %s", m.Metadata.Name, SecretCertKey, SecretCAKey)
	}
	return s, nil
}

// CertSource is one group of certificates read from an input, named by
// where it came from ("PEM", "secret ns/name tls.crt", ...).
type CertSource struct {
	Name  string
	Certs []*x509.Certificate
}

// ParseCertInput reads certificates from PEM (one certificate, a chain or
// a bundle) or from a Secret manifest (tls.crt, then ca.crt). Private keys
// in the input are never parsed or returned.
func ParseCertInput(data []byte) ([]CertSource, error) {
	if len(data) > MaxInputLength {
		return nil, fmt.Errorf("input is %d bytes, more than the %d allowed", len(data), MaxInputLength)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("input is empty")
	}
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		certs, err := ParseCertsPEM(trimmed)
		if err != nil {
			return nil, err
		}
		return []CertSource{{Name: "PEM", Certs: certs}}, nil
	}
	s, err := ParseTLSSecret(trimmed)
	if err != nil {
		return nil, fmt.Errorf("input is neither PEM nor a Secret manifest: %w", err)
	}
	name := "secret " + s.Name
	if s.Namespace != "" {
		name = "secret " + s.Namespace + "/" + s.Name
	}
	var out []CertSource
	for _, part := range []struct {
		key  string
		data []byte
	}{{SecretCertKey, s.Cert}, {SecretCAKey, s.CA}} {
		if len(part.data) == 0 {
			continue
		}
		certs, err := ParseCertsPEM(part.data)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", name, part.key, err)
		}
		out = append(out, CertSource{Name: name + " " + part.key, Certs: certs})
	}
	return out, nil
}
