//! How a binary ends: on error, `error: <one line>` on stderr and a failure status.

/// A binary's exit: on error, `error: <one line>` on stderr and a failure status.
pub fn exit(result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("error: {}", one_line(&error));
        std::process::ExitCode::FAILURE
    })
}

/// An error and its causes on one line for people (`a: b: c`), skipping a cause whose text the
/// line already holds (messages often embed their source).
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::other("disk full");
        let err = anyhow::Error::new(io).context("cannot write x: disk full").context("saving");
        assert_eq!(one_line(&err), "saving: cannot write x: disk full");
    }
}
