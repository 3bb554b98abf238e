//! MIGRATE's arguments as a command filter sees them: which keys a MIGRATE moves, and
//! the edits that take some of them out of it.
//!
//! Slot migration (`redis-cli --cluster reshard`, or by hand) moves keys with MIGRATE.
//! An entry a pending background purge hides must not leave with it: the importing
//! node would serve it as a live entry. The server layer drops such keys from every
//! MIGRATE before Redis runs it; the purge deletes them within milliseconds, and the
//! migration's next `CLUSTER GETKEYSINSLOT` round no longer lists them.
//!
//! Pure logic; knows nothing of Redis. Parsing follows Redis 7.0's `migrateCommand`
//! (`MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw]
//! [KEYS key …]`): anything it would refuse is left alone, for Redis to refuse.

/// One change to a command's arguments, applied in order (positions count the command
/// name as 0 and refer to the arguments as they are when the edit is applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Delete(usize),
    Replace(usize, &'static [u8]),
    Append(&'static [u8]),
}

/// Where the keys of a MIGRATE are: the single-key form's argument 3, or everything
/// after `KEYS`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    Single,
    After(usize),
}

fn keys_of(argv: &[&[u8]]) -> Option<Keys> {
    if argv.len() < 6 || !argv[0].eq_ignore_ascii_case(b"migrate") {
        return None;
    }
    let mut j = 6;
    while j < argv.len() {
        let more = argv.len() - 1 - j;
        let word = argv[j];
        if word.eq_ignore_ascii_case(b"copy") || word.eq_ignore_ascii_case(b"replace") {
            j += 1;
        } else if word.eq_ignore_ascii_case(b"auth") && more >= 1 {
            j += 2;
        } else if word.eq_ignore_ascii_case(b"auth2") && more >= 2 {
            j += 3;
        } else if word.eq_ignore_ascii_case(b"keys") && argv[3].is_empty() {
            return Some(Keys::After(j));
        } else {
            return None;
        }
    }
    (!argv[3].is_empty()).then_some(Keys::Single)
}

/// Whether `name` (a command's first argument) may be a MIGRATE: the cheap test a
/// filter that sees every command makes first.
pub fn is_migrate(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"migrate")
}

/// The edits that take out of a MIGRATE every key `keep_here` selects; none for any
/// other command. A single-key MIGRATE whose key stays becomes the `KEYS` form with no
/// key, to which Redis answers `NOKEY` (as it does when the keys are gone).
pub fn keep_keys(argv: &[&[u8]], keep_here: impl Fn(&[u8]) -> bool) -> Vec<Edit> {
    match keys_of(argv) {
        None => Vec::new(),
        Some(Keys::Single) if keep_here(argv[3]) => vec![Edit::Replace(3, b""), Edit::Append(b"KEYS")],
        Some(Keys::Single) => Vec::new(),
        // Highest first, so each position still names the same argument.
        Some(Keys::After(at)) => (at + 1..argv.len()).rev().filter(|&i| keep_here(argv[i])).map(Edit::Delete).collect(),
    }
}

/// `argv` after `edits` (what Redis will run; for tests and the fuzzer).
#[cfg(test)]
pub fn apply(argv: &[&[u8]], edits: &[Edit]) -> Option<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
    for edit in edits {
        match *edit {
            Edit::Delete(i) if i < out.len() => {
                out.remove(i);
            }
            Edit::Replace(i, with) if i < out.len() => out[i] = with.to_vec(),
            Edit::Append(with) => out.push(with.to_vec()),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|w| if w == "''" { Vec::new() } else { w.as_bytes().to_vec() }).collect()
    }

    fn run(s: &str) -> String {
        let argv = words(s);
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let edits = keep_keys(&refs, |k| k.starts_with(b"hid"));
        let out = apply(&refs, &edits).expect("edits apply");
        out.iter().map(|w| if w.is_empty() { "''".to_string() } else { String::from_utf8_lossy(w).into_owned() }).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn hidden_keys_stay() {
        assert_eq!(run("MIGRATE h 1 '' 0 5000 KEYS a hid1 b hid2"), "MIGRATE h 1 '' 0 5000 KEYS a b");
        assert_eq!(run("migrate h 1 '' 0 5000 COPY REPLACE AUTH keys KEYS hid1 hid2"), "migrate h 1 '' 0 5000 COPY REPLACE AUTH keys KEYS");
        assert_eq!(run("MIGRATE h 1 '' 0 5000 AUTH2 u hid KEYS x"), "MIGRATE h 1 '' 0 5000 AUTH2 u hid KEYS x", "AUTH2's words are not keys");
        assert_eq!(run("MIGRATE h 1 hid1 0 5000 REPLACE"), "MIGRATE h 1 '' 0 5000 REPLACE KEYS");
        assert_eq!(run("MIGRATE h 1 a 0 5000"), "MIGRATE h 1 a 0 5000");
    }

    #[test]
    fn what_redis_refuses_is_left_alone() {
        for s in ["MIGRATE h 1 hid1 0", "MIGRATE h 1 hid1 0 5000 KEYS hid2", "MIGRATE h 1 '' 0 5000 AUTH", "MIGRATE h 1 '' 0 5000 BOGUS KEYS hid", "GET hid1 a b c d e"] {
            assert_eq!(run(s), s);
        }
    }
}
