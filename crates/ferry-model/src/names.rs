//! Server-generated names (`amq.gen-…` queues, `amq.ctag-…` consumer tags),
//! in RabbitMQ's shape: a prefix and 22 URL-safe base64 characters.

use rand::Rng;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_suffix() -> String {
    let mut rng = rand::thread_rng();
    (0..22)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..64)]))
        .collect()
}

/// A fresh server-named queue name.
pub fn server_named_queue() -> String {
    format!("amq.gen-{}", random_suffix())
}

/// A fresh server-generated consumer tag.
pub fn consumer_tag() -> String {
    format!("amq.ctag-{}", random_suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_rabbitmq_shape_and_differ() {
        let a = server_named_queue();
        let b = server_named_queue();
        assert!(a.starts_with("amq.gen-") && a.len() == 30, "{a}");
        assert_ne!(a, b);
        assert!(consumer_tag().starts_with("amq.ctag-"));
    }
}
