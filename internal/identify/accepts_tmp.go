package identify

import "github.com/darkit/protoplex/protocols"

// accepts is a stand-in until protocols.(*Protocol).Accepts lands.
func accepts(p *protocols.Protocol, md protocols.Metadata) bool { return false }
