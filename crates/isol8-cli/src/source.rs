//! Where `isol8 run` takes its code and setup from besides a file or `-e`: the
//! `--github` and `--gist` shortcuts (raw-file URLs, fetched like `--url` under the
//! remote-code policy) and `--setup` values (a file's contents or the text itself).

use anyhow::{bail, Context, Result};

/// True for a path segment a shortcut may hold: not empty, not `.` or `..`.
fn url_segment(s: &str) -> bool {
    !matches!(s, "" | "." | "..")
}

/// The URL of `--github OWNER/REPO/REF/PATH`:
/// `https://raw.githubusercontent.com/OWNER/REPO/REF/PATH`.
pub fn github_url(spec: &str) -> Result<String> {
    let parts: Vec<&str> = spec.split('/').collect();
    if parts.len() < 4 || parts.iter().any(|p| !url_segment(p)) {
        bail!("--github `{spec}` must look like OWNER/REPO/REF/PATH (e.g. octo/tools/main/scripts/job.py)");
    }
    Ok(format!(
        "https://raw.githubusercontent.com/{}",
        parts.join("/")
    ))
}

/// The URL of `--gist ID[/FILE]`: `https://gist.githubusercontent.com/ID/raw[/FILE]`.
pub fn gist_url(spec: &str) -> Result<String> {
    let (id, file) = match spec.split_once('/') {
        Some((id, file)) => (id, Some(file)),
        None => (spec, None),
    };
    if id.is_empty()
        || !id.chars().all(|c| c.is_ascii_alphanumeric())
        || file.is_some_and(|f| !f.split('/').all(url_segment))
    {
        bail!("--gist `{spec}` must look like ID or ID/FILE (e.g. 0123abcd/job.py)");
    }
    Ok(match file {
        Some(f) => format!("https://gist.githubusercontent.com/{id}/raw/{f}"),
        None => format!("https://gist.githubusercontent.com/{id}/raw"),
    })
}

/// The code URL of `--url`, `--github` or `--gist`, if one was given.
pub(crate) fn code_url(
    url: Option<&str>,
    github: Option<&str>,
    gist: Option<&str>,
) -> Result<Option<String>> {
    Ok(match (url, github, gist) {
        (Some(url), _, _) => Some(url.to_string()),
        (_, Some(spec), _) => Some(github_url(spec)?),
        (_, _, Some(spec)) => Some(gist_url(spec)?),
        _ => None,
    })
}

/// `--setup` values joined by newlines, each an existing file's contents or the text.
pub(crate) fn setup_script(items: &[String]) -> Result<Option<String>> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        let path = std::path::Path::new(item);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--setup: cannot read `{item}`"))?;
            parts.push(text);
        } else {
            parts.push(item.clone());
        }
    }
    Ok(Some(parts.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_shortcuts_expand_to_raw_githubusercontent_urls() {
        assert_eq!(
            github_url("octo/tools/main/scripts/job.py").expect("valid"),
            "https://raw.githubusercontent.com/octo/tools/main/scripts/job.py"
        );
        assert_eq!(
            github_url("octo/tools/v1.2/job.js").expect("valid"),
            "https://raw.githubusercontent.com/octo/tools/v1.2/job.js"
        );
        for bad in [
            "octo/tools/main",
            "octo",
            "",
            "octo//main/job.py",
            "o/r/main/a//b.py",
            "o/r/main/../x.py",
        ] {
            let e = github_url(bad).expect_err(bad).to_string();
            assert!(e.contains("OWNER/REPO/REF/PATH"), "{bad}: {e}");
        }
    }

    #[test]
    fn gist_shortcuts_expand_to_gist_raw_urls() {
        assert_eq!(
            gist_url("0123abcd/job.py").expect("valid"),
            "https://gist.githubusercontent.com/0123abcd/raw/job.py"
        );
        assert_eq!(
            gist_url("0123abcd").expect("valid"),
            "https://gist.githubusercontent.com/0123abcd/raw"
        );
        for bad in [
            "",
            "/job.py",
            "01/../x",
            "0123abcd/",
            "a.b/job.py",
            "id/a//b",
        ] {
            let e = gist_url(bad).expect_err(bad).to_string();
            assert!(e.contains("ID or ID/FILE"), "{bad}: {e}");
        }
    }

    #[test]
    fn setup_values_are_file_contents_or_the_text_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("setup.sh");
        std::fs::write(&file, "echo from-file").expect("write");
        let items = vec![
            file.to_string_lossy().into_owned(),
            "echo inline".to_string(),
            dir.path().join("missing.sh").to_string_lossy().into_owned(),
        ];
        let script = setup_script(&items).expect("script").expect("some");
        let missing = dir.path().join("missing.sh");
        assert_eq!(
            script,
            format!("echo from-file\necho inline\n{}", missing.display())
        );
        assert_eq!(setup_script(&[]).expect("none"), None);
    }
}
