package tapapi

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
)

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
