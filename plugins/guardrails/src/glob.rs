//! Glob patterns over namespaced tool names: `*` matches any run of characters (also
//! none), `?` exactly one; everything else matches itself, case-sensitively.

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and where in `name` its match ends so far: on a mismatch the
    // star takes one more character and matching resumes after it (linear backtracking).
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The first of `patterns` that `name` matches.
pub fn first_match<'a>(patterns: &'a [String], name: &str) -> Option<&'a str> {
    patterns
        .iter()
        .find(|pattern| matches(pattern, name))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("current_time__*", "current_time__now"));
        assert!(matches("*__delete_file", "session_files__delete_file"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("todo__?ead_todos", "todo__read_todos"));
        assert!(matches("*a", "banana"));
        assert!(matches("ä?", "äö"));
        assert!(!matches("current_time__*", "web_fetch__fetch"));
        assert!(!matches("*__delete_file", "session_files__delete_file_x"));
        assert!(!matches("a?c", "ac"));
        assert!(!matches("abc", "ABC"));
        assert!(!matches("", "a"));
        assert!(!matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn first_matching_pattern_wins() {
        let patterns = vec!["web_*".to_owned(), "*__fetch".to_owned()];
        assert_eq!(first_match(&patterns, "web_fetch__fetch"), Some("web_*"));
        assert_eq!(first_match(&patterns, "x__fetch"), Some("*__fetch"));
        assert_eq!(first_match(&patterns, "todo__read_todos"), None);
    }
}
