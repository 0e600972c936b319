// Package match holds the routing matchers of Bourse's topic and headers
// exchanges. They are pure data structures: no I/O, no logging, and no
// knowledge of queues beyond an opaque comparable destination value. The
// package imports only the standard library and core.
//
// # Topic exchange
//
// Topic is a trie of binding patterns with RabbitMQ topic-exchange semantics
// (rabbit_exchange_type_topic, rabbit_db_topic_exchange):
//
//   - A routing key and a binding pattern are split on '.' into words. The
//     empty string is zero words (RabbitMQ's split_topic_key(<<>>) is []);
//     any other string of n dots is n+1 words, empty words included, so "a..b"
//     is the three words "a", "", "b" and "." is two empty words.
//   - In a pattern, a word that is exactly "*" matches exactly one word (an
//     empty word included) and a word that is exactly "#" matches zero or more
//     words. "a*" or "#a" are ordinary words. In a routing key, "*" and "#" are
//     ordinary words.
//   - Hence pattern "" matches only key "", pattern "#" matches every key
//     including "", and pattern "*" does not match "" but matches "x" and the
//     one-empty-word key cannot be written (it would be "").
//   - Consecutive "#" words behave as one: "a.#.#.b" and "a.#.b" match the
//     same keys. They remain distinct bindings for Add, Remove and Len.
//
// Match yields each matching destination once, however many of its patterns
// match (RabbitMQ's route/2 leaves deduplication to its caller; Topic does
// it itself).
//
// # Headers exchange
//
// HeadersBinding evaluates one headers-exchange binding with RabbitMQ's
// semantics (rabbit_exchange_type_headers, 3.10 and later): see
// ParseHeadersBinding.
package match
