package contract

// WorkflowQueue is the shared task queue of every workflow (and of their local activities);
// steps that touch a host's pool run on that host's own queue instead.
const WorkflowQueue = "imagevol.workflows"

// HostQueue is the task queue of the steps that must run on one storage host.
func HostQueue(host string) string { return "imagevol.host." + host }
