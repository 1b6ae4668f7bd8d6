package topcmd

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// ANSI sequences of the live view: the alternate screen (so the shell's
// screen comes back on exit, as top does) and the cursor.
const (
	enterScreen = "\x1b[?1049h\x1b[?25l"
	leaveScreen = "\x1b[?25h\x1b[?1049l"
)

// screen is the terminal while the live view runs: raw input (keys
// without Enter, Ctrl-C as a byte), the alternate screen.
type screen struct {
	in   *os.File
	out  io.Writer
	outf *os.File
	old  *term.State
}

// isTerminal is true when both stdin and stdout are terminals.
func isTerminal(in, out *os.File) bool {
	return in != nil && out != nil && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(out.Fd()))
}

func openScreen(in, out *os.File) (*screen, error) {
	old, err := term.MakeRaw(int(in.Fd()))
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	s := &screen{in: in, out: out, outf: out, old: old}
	if _, err := io.WriteString(out, enterScreen); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// size is the terminal's width and height (80x24 when unknown).
func (s *screen) size() (int, int) {
	w, h, err := term.GetSize(int(s.outf.Fd()))
	if err != nil || w <= 0 || h <= 0 {
		return 80, 24
	}
	return w, h
}

// keys sends quit once q, Q, Ctrl-C or Ctrl-D is pressed (or input ends).
func (s *screen) keys(quit chan<- struct{}) {
	buf := make([]byte, 64)
	for {
		n, err := s.in.Read(buf)
		for _, c := range buf[:n] {
			if c == 'q' || c == 'Q' || c == 3 || c == 4 {
				close(quit)
				return
			}
		}
		if err != nil {
			close(quit)
			return
		}
	}
}

// close restores the terminal: the shell's screen, the cursor, cooked mode.
func (s *screen) close() {
	_, _ = io.WriteString(s.out, leaveScreen)
	_ = term.Restore(int(s.in.Fd()), s.old)
}
