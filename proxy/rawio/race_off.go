//go:build !race

package rawio

func raceAfterRead([]byte, int)  {}
func raceBeforeWrite()           {}
func raceAfterWrite([]byte, int) {}
