package detect

// matchHTTP1 decides whether b starts with an HTTP/1.x request line:
// method SP request-target SP "HTTP/1.0"|"HTTP/1.1" CRLF. Any RFC 9110
// token is accepted as the method (extension methods are legal); "no" is
// returned at the first byte that cannot continue a request line.
func matchHTTP1(b []byte) match {
	i := 0
	// method = token
	for i < len(b) && isTchar(b[i]) {
		i++
		if i > maxMethodLen {
			return no
		}
	}
	if i == len(b) {
		return needMoreUnlessTooLong(b)
	}
	if i == 0 || b[i] != ' ' {
		return no
	}
	i++
	// request-target: visible bytes (obs-text tolerated, as many servers do)
	start := i
	for i < len(b) && isTargetByte(b[i]) {
		i++
	}
	if i == len(b) {
		return needMoreUnlessTooLong(b)
	}
	if i == start || b[i] != ' ' {
		return no
	}
	i++
	const version = "HTTP/1.x\r\n"
	for j := 0; j < len(version); j++ {
		if i+j == len(b) {
			return needMoreUnlessTooLong(b)
		}
		c := b[i+j]
		if j == len("HTTP/1.") {
			if c != '0' && c != '1' {
				return no
			}
			continue
		}
		if c != version[j] {
			return no
		}
	}
	if i+len(version) > MaxHTTP1Line {
		return no
	}
	return yes
}

// maxMethodLen is generous: the longest registered method is 17 bytes.
const maxMethodLen = 64

func needMoreUnlessTooLong(b []byte) match {
	if len(b) >= MaxHTTP1Line {
		return no
	}
	return needMore
}

func isTargetByte(c byte) bool { return c > ' ' && c != 0x7f }

// isTchar reports whether c is an RFC 9110 tchar.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
