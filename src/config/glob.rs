//! Glob sources: a source whose `path` holds glob characters (`*`, `?`,
//! `[...]`, `{a,b}`, `**`) or is a list tails every file that matches.
//! This module owns the validated patterns ([`GlobSpec`], compiled once at
//! load with `globset`) and the names of the files such a source tails
//! ([`file_key`], [`split_key`]).
//!
//! Each file a glob source tails is tailed like a one-path source of its
//! own, under the key `NAME:PATH` (its store record, its tailer, its row in
//! `logcatch-ctl offsets`); its messages still carry the source's name as
//! their key and `source` header ([`crate::source::discover`] finds the
//! files; [`crate::daemon`] starts and stops their tailers).
//!
//! Invariants: a configured source name never contains [`KEY_SEP`], so a
//! key splits back into its source and path one way only; patterns are
//! absolute (resolved against the config file's folder like any path).
//!
//! Must never: match a path against anything but the compiled patterns
//! (no hand-written matching).

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// What separates a glob source's name from a file's path in its key: the
/// path is absolute, so the key reads `nginx:/var/log/nginx/access.log`.
pub const KEY_SEP: &str = ":/";

/// The key a file of glob source `source` is tailed and recorded under.
pub fn file_key(source: &str, path: &Path) -> String {
    format!("{source}:{}", path.display())
}

/// Splits a key into its source name and, for a file of a glob source, the
/// file's path.
pub fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.find(KEY_SEP) {
        Some(i) => (&key[..i], Some(&key[i + 1..])),
        None => (key, None),
    }
}

/// The Kafka key (and `source` header) of the lines of `key`: the
/// source's name, also for a glob source's file. Every producer and the
/// read-back's partition choice use it, so they agree where lines land.
pub fn kafka_key(key: &str) -> &str {
    split_key(key).0
}

/// Does `path` hold glob characters (and so name a glob source)?
pub fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// A glob source's patterns and options, validated.
#[derive(Debug, Clone)]
pub struct GlobSpec {
    /// The patterns files must match (absolute), as written after resolving.
    pub include: Vec<String>,
    /// Patterns of files never tailed, even if they match `include`.
    pub exclude: Vec<String>,
    include_set: GlobSet,
    exclude_set: GlobSet,
    /// Files last written longer ago than this are not opened, unless they
    /// already have a record.
    pub ignore_older_than: Option<Duration>,
    /// How long after its file vanished (read to its end) a file's record
    /// is deleted.
    pub forget_after: Duration,
}

impl PartialEq for GlobSpec {
    fn eq(&self, other: &GlobSpec) -> bool {
        self.include == other.include
            && self.exclude == other.exclude
            && self.ignore_older_than == other.ignore_older_than
            && self.forget_after == other.forget_after
    }
}

/// A pattern that does not compile: its text and why (the validator adds
/// the file and line).
#[derive(Debug, thiserror::Error)]
#[error("bad glob pattern `{pattern}`: {message}")]
pub struct BadPattern {
    pub pattern: String,
    pub message: String,
}

impl GlobSpec {
    /// Compiles `include` and `exclude` (already absolute).
    pub fn new(
        include: Vec<String>,
        exclude: Vec<String>,
        ignore_older_than: Option<Duration>,
        forget_after: Duration,
    ) -> Result<GlobSpec, BadPattern> {
        Ok(GlobSpec {
            include_set: compile(&include)?,
            exclude_set: compile(&exclude)?,
            include,
            exclude,
            ignore_older_than,
            forget_after,
        })
    }

    /// Is `path` one of this source's files (matches an include pattern,
    /// no exclude pattern)?
    pub fn matches(&self, path: &Path) -> bool {
        self.include_set.is_match(path) && !self.exclude_set.is_match(path)
    }

    /// The folders a walk must start from: each include pattern's longest
    /// leading part without glob characters, and how deep below it a
    /// match can lie (`None`: any depth, the pattern has `**`).
    pub fn roots(&self) -> Vec<(PathBuf, Option<usize>)> {
        self.include
            .iter()
            .map(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                let literal = parts.iter().take_while(|c| !is_pattern(c)).count();
                // The last part is the file name: a pattern with no glob
                // characters at all walks its folder, one level deep.
                let literal = literal.min(parts.len() - 1);
                let root = parts[..literal].join("/");
                let root = if root.is_empty() { "/".into() } else { root };
                let rest = &parts[literal..];
                let depth = (!rest.contains(&"**")).then_some(rest.len());
                (PathBuf::from(root), depth)
            })
            .collect()
    }
}

fn compile(patterns: &[String]) -> Result<GlobSet, BadPattern> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(glob(p)?);
    }
    set.build().map_err(|e| BadPattern {
        pattern: patterns.join(", "),
        message: e.to_string(),
    })
}

/// One pattern, as operators of Vector, Fluent Bit and Filebeat expect it:
/// `*` and `?` stay within one folder, `**` crosses folders, `{a,b}` is
/// either, `[...]` a class.
fn glob(pattern: &str) -> Result<Glob, BadPattern> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| BadPattern {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(include: &[&str], exclude: &[&str]) -> GlobSpec {
        GlobSpec::new(
            include.iter().map(|s| s.to_string()).collect(),
            exclude.iter().map(|s| s.to_string()).collect(),
            None,
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn a_star_stays_in_its_folder_and_two_stars_cross_folders() {
        let s = spec(&["/var/log/*.log"], &[]);
        assert!(s.matches(Path::new("/var/log/a.log")));
        assert!(!s.matches(Path::new("/var/log/app/a.log")));
        assert!(!s.matches(Path::new("/var/log/a.log.1")));
        let s = spec(&["/var/log/**/*.log"], &[]);
        assert!(s.matches(Path::new("/var/log/a.log")));
        assert!(s.matches(Path::new("/var/log/app/x/a.log")));
    }

    #[test]
    fn braces_classes_and_question_marks_match_and_exclude_wins() {
        let s = spec(&["/l/{web,api}-[0-9].lo?"], &["/l/api-*"]);
        assert!(s.matches(Path::new("/l/web-1.log")));
        assert!(!s.matches(Path::new("/l/api-1.log")));
        assert!(!s.matches(Path::new("/l/db-1.log")));
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_text() {
        let e = GlobSpec::new(vec!["/l/[a-".into()], vec![], None, Duration::ZERO).unwrap_err();
        assert_eq!(e.pattern, "/l/[a-");
        assert!(!e.message.is_empty());
    }

    #[test]
    fn roots_are_the_literal_folders_with_their_depth() {
        let s = spec(
            &["/var/log/pods/*/*/*.log", "/srv/**/x.log", "/a/b.log"],
            &[],
        );
        assert_eq!(
            s.roots(),
            [
                (PathBuf::from("/var/log/pods"), Some(3)),
                (PathBuf::from("/srv"), None),
                (PathBuf::from("/a"), Some(1)),
            ]
        );
    }

    #[test]
    fn a_key_splits_back_into_source_and_path() {
        let k = file_key("nginx", Path::new("/var/log/a:b.log"));
        assert_eq!(k, "nginx:/var/log/a:b.log");
        assert_eq!(split_key(&k), ("nginx", Some("/var/log/a:b.log")));
        assert_eq!(split_key("plain"), ("plain", None));
    }

    fn parse(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::parse(Path::new("/etc/lc/config.yaml"), text)
    }

    #[test]
    fn a_path_with_glob_characters_or_a_list_makes_a_glob_source() {
        let c = parse(
            "configpath:\n  old: ../logdir1/*.log\n  one: /var/log/one.log\n\
             sources:\n  web:\n    path: [/var/log/nginx/*.log, logs/**/*.log]\n    exclude: [/var/log/nginx/debug*]\n    \
             ignore_older_than: 2h\n    forget_after: 10m\n",
        )
        .unwrap();
        let old = c.sources["old"].glob.as_ref().expect("a glob");
        assert_eq!(old.include, ["/etc/logdir1/*.log"]);
        assert!(c.sources["one"].glob.is_none());
        let web = c.sources["web"].glob.as_ref().expect("a glob");
        assert_eq!(
            web.include,
            ["/var/log/nginx/*.log", "/etc/lc/logs/**/*.log"]
        );
        assert!(!web.matches(Path::new("/var/log/nginx/debug.log")));
        assert!(web.matches(Path::new("/etc/lc/logs/a/b.log")));
        assert_eq!(web.ignore_older_than, Some(Duration::from_secs(7200)));
        assert_eq!(web.forget_after, Duration::from_secs(600));
        let file = c.sources["web"].for_file(Path::new("/var/log/nginx/a.log"));
        assert_eq!(file.name, "web:/var/log/nginx/a.log");
        assert!(file.glob.is_none());
    }

    #[test]
    fn a_bad_pattern_is_named_with_its_line() {
        let e = parse("sources:\n  web:\n    path:\n      - /ok/*.log\n      - /bad/[a-.log\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":5:"), "{e}");
        assert!(e.contains("/bad/[a-.log"), "{e}");
    }

    #[test]
    fn glob_options_on_one_path_and_a_name_with_the_key_separator_are_refused() {
        let e = parse("sources:\n  web:\n    path: /a.log\n    exclude: [/b]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("need a glob"), "{e}");
        let e = parse("configpath:\n  \"a:/b\": /a.log\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must not contain"), "{e}");
    }
}
