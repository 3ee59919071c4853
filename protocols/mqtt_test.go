package protocols

import "testing"

// TestMQTT: CONNECT packets of MQTT 3.1, 3.1.1 and 5, and near misses.
func TestMQTT(t *testing.T) {
	runDetectCases(t, detectorOf(t, "mqtt"), []detectCase{
		{"3.1.1 CONNECT", "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", Match},
		{"3.1 CONNECT (MQIsdp)", "\x10\x25\x00\x06MQIsdp\x03\x02\x00\x3c", Match},
		{"5 CONNECT", "\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03", Match},
		{"MQTT with level 3", "\x10\x0c\x00\x04MQTT\x03\x02", NoMatch},
		{"reserved flag bit set", "\x10\x0c\x00\x04MQTT\x04\x03", NoMatch},
		{"5-byte remaining length", "\x10\xff\xff\xff\xff\x01", NoMatch},
		{"wrong protocol name", "\x10\x0c\x00\x04MQTX", NoMatch},
		{"CONNACK is not a client's first packet", "\x20\x02\x00\x00", NoMatch},
	})
}
