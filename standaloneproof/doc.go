// Package standaloneproof holds the checks of the standalone proof: imagevol against Temporal's
// own server on PostgreSQL (not the dev server), its cache rows in MariaDB, and two storage hosts
// with a worker each. They build only with the "standalone" tag and need the stack
// deploy/standalone-proof.sh brings up (`make standalone-proof`), which passes its addresses and
// token in PROOF_* variables; without the tag this package is empty.
//
// It imports none of imagevol's packages: it checks the stack from outside, through its API,
// its databases and the Ceph and Temporal command-line tools.
package standaloneproof
