package protocols

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The detectors added with the catalogue: MQTT, SOCKS4/4a/5, PostgreSQL,
// SMTP (client-first EHLO), FTP (silence only).
var catalogue = map[string]DetectFunc{
	"mqtt":       detectMQTT,
	"socks4":     detectSOCKS4,
	"socks5":     detectSOCKS5,
	"postgresql": detectPostgreSQL,
	"smtp":       detectSMTP,
}

func TestCatalogueTables(t *testing.T) {
	cases := []struct {
		proto string
		data  string
		want  Result
	}{
		{"mqtt", "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", Match},
		{"mqtt", "\x10\x25\x00\x06MQIsdp\x03\x02\x00\x3c", Match},
		{"mqtt", "\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03", Match},
		{"mqtt", "\x10\x0c\x00\x04MQTT\x03\x02", NoMatch}, // MQTT with level 3
		{"mqtt", "\x10\x0c\x00\x04MQTT\x04\x03", NoMatch}, // reserved flag bit set
		{"mqtt", "\x10\xff\xff\xff\xff\x01", NoMatch},     // 5-byte remaining length
		{"mqtt", "\x10\x0c\x00\x04MQTX", NoMatch},
		{"mqtt", "\x20\x02\x00\x00", NoMatch}, // CONNACK is not a client's first packet
		{"socks5", "\x05\x02\x00\x01", Match},
		{"socks5", "\x05\x01\x02", Match},
		{"socks5", "\x05\x00", NoMatch},
		{"socks5", "\x05\x02\x00\x42", NoMatch}, // unassigned method
		{"socks5", "\x05\x03\x00", NeedMore},
		{"socks4", "\x04\x01\x00\x50\x7f\x00\x00\x02\x00", Match},
		{"socks4", "\x04\x01\x00\x50\x00\x00\x00\x01user\x00www.example.test\x00", Match},
		{"socks4", "\x04\x01\x00\x50\x00\x00\x00\x01\x00www.exam", NeedMore},
		{"socks4", "\x04\x03\x00\x50", NoMatch},
		{"socks4", "\x04\x01\x00\x50\x7f\x00\x00\x02us\x01", NoMatch}, // control byte in user id
		{"postgresql", "\x00\x00\x00\x08\x04\xd2\x16\x2f", Match},
		{"postgresql", "\x00\x00\x00\x08\x04\xd2\x16\x30", Match}, // GSSENCRequest
		{"postgresql", "\x00\x00\x00\x10\x04\xd2\x16\x2e", Match}, // CancelRequest
		{"postgresql", "\x00\x00\x00\x35\x00\x03\x00\x00user", Match},
		{"postgresql", "\x00\x00\x00\x09\x04\xd2\x16\x2f", NoMatch},
		{"postgresql", "\x00\x01\x00\x35\x00\x03\x00\x00", NoMatch},
		{"postgresql", "\x00\x00\x00\x35\x00\x02\x00\x00", NoMatch}, // protocol 2.0
		{"smtp", "EHLO client.test\r\n", Match},
		{"smtp", "helo x\r\n", Match},
		{"smtp", "EHL", NeedMore},
		{"smtp", "EHLX", NoMatch},
	}
	for _, c := range cases {
		checkDetector(t, c.proto+" "+strings.TrimSpace(c.data[:min(len(c.data), 12)]), catalogue[c.proto], []byte(c.data), c.want)
	}
	if NewFTPProtocol("x:1").Detect([]byte("USER anonymous\r\n")) != NoMatch || !NewFTPProtocol("x:1").ServerFirst() {
		t.Fatal("FTP must only be chosen on silence")
	}
	if !NewSMTPProtocol("x:1").ServerFirst() {
		t.Fatal("SMTP is server-first")
	}
}

// TestCatalogueFlights: real first flights (curl --socks4/4a/5-hostname,
// psql with and without SSL, mosquitto_pub -V mqttv31/mqttv311/mqttv5) are
// matched by their own detector, split at every offset, and by no other
// catalogue detector.
func TestCatalogueFlights(t *testing.T) {
	files, _ := filepath.Glob("testdata/flights/*.bin")
	seen := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		proto := strings.SplitN(filepath.Base(f), "-", 2)[0]
		for name, detect := range catalogue {
			if name == proto {
				checkDetector(t, filepath.Base(f), detect, data, Match)
				seen[name]++
			} else if detect(data) == Match {
				t.Errorf("%s detector matches %s", name, filepath.Base(f))
			}
		}
	}
	for _, p := range []string{"mqtt", "socks4", "socks5", "postgresql"} {
		if seen[p] == 0 {
			t.Errorf("no real flight for %s", p)
		}
	}
}

func FuzzCatalogue(f *testing.F) {
	files, _ := filepath.Glob("testdata/flights/*.bin")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, detect := range catalogue {
			whole := detect(data)
			for k := 0; k <= len(data); k++ {
				if r := detect(data[:k]); r != NeedMore {
					if r != whole {
						t.Fatalf("%s: prefix %d says %v, whole says %v", name, k, r, whole)
					}
					break
				}
			}
		}
	})
}
