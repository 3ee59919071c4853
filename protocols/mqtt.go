package protocols

func init() { register(mqttDescriptor, NewMQTTProtocol) }

var mqttDescriptor = Descriptor{Spec: Spec{Name: "MQTT", Transports: TCP, Detect: detectMQTT, FirstBytes: []byte{0x10}},
	Summary: "MQTT 3.1, 3.1.1 or 5 CONNECT packet"}

// NewMQTTProtocol routes MQTT 3.1, 3.1.1 and 5 clients: a CONNECT packet
// (0x10), its remaining length (a 1–4 byte varint), then the protocol name
// "MQIsdp" (level 3) or "MQTT" (level 4 or 5) and connect flags whose
// reserved bit is 0.
func NewMQTTProtocol(target string) *Protocol { return build(&mqttDescriptor, target) }

func detectMQTT(data []byte) Result {
	if r := firstByteIs(data, 0x10); r != Match {
		return r
	}
	// Remaining length: 7 bits per byte, high bit = more bytes follow.
	remaining, i := 0, 1
	for shift := 0; ; shift += 7 {
		if i >= len(data) {
			return NeedMore
		}
		b := data[i]
		i++
		remaining |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		if i == 5 {
			return NoMatch // longer than 4 bytes
		}
	}
	if remaining < 10 {
		return NoMatch
	}
	// Protocol name: 2-byte length + name.
	if len(data) < i+2 {
		return NeedMore
	}
	nameLen := int(data[i])<<8 | int(data[i+1])
	var name string
	switch nameLen {
	case 4:
		name = "MQTT"
	case 6:
		name = "MQIsdp"
	default:
		return NoMatch
	}
	i += 2
	for k := 0; k < nameLen; k++ {
		if i+k >= len(data) {
			return NeedMore
		}
		if data[i+k] != name[k] {
			return NoMatch
		}
	}
	i += nameLen
	if len(data) < i+2 {
		return NeedMore
	}
	level, flags := data[i], data[i+1]
	if (name == "MQTT" && level != 4 && level != 5) || (name == "MQIsdp" && level != 3) || flags&0x01 != 0 {
		return NoMatch
	}
	return Match
}
