package activities

import "github.com/imagevol/imagevol/config"

// Config is one storage host's settings, declared (with their keys, variables and flags) in
// package config.
type Config = config.Worker
