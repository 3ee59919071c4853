package protocols

import (
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// h2Preface is the HTTP/2 client preface, written out apart from the detector.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func FuzzHTTP2(f *testing.F) {
	fuzzCore(f, detectHTTP2, nil, fuzzSeeds(f, []string{"http2-"}, "PRI * HTTP/1.1\r\n")...)
}

func BenchmarkDetectHTTP2(b *testing.B) {
	benchDetect(b, detectHTTP2, testnet.Flight(b, "http2-curl.bin"), Match)
}
