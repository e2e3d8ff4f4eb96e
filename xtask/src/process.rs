//! Running child processes: plain runs, and runs whose output is echoed while some lines of it
//! are kept for parsing.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};

/// Which output stream of a child to echo and capture.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A `cargo` command of the toolchain that runs xtask (`CARGO`, set by `cargo run`), or the
/// `cargo` on `PATH` when xtask runs on its own.
pub(crate) fn cargo() -> Command {
    let program = std::env::var_os("CARGO")
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| OsString::from("cargo"));
    Command::new(program)
}

/// A `cargo` command through the rustup proxy on `PATH`, which understands `+toolchain`.
pub(crate) fn rustup_cargo() -> Command {
    Command::new("cargo")
}

/// The command line of `cmd` as it would be typed, for headers and error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    // Show `cargo` rather than the full path of the toolchain's binary.
    if let Some(first) = words.first_mut()
        && first.ends_with("/cargo")
    {
        "cargo".clone_into(first);
    }
    words.join(" ")
}

/// Runs `cmd` with the standard streams inherited and waits for it.
pub(crate) fn run(cmd: &mut Command) -> Result<ExitStatus, String> {
    flush_stdout();
    cmd.status()
        .map_err(|err| format!("cannot start `{}`: {err}", describe(cmd)))
}

/// Runs `cmd`, echoing `stream` to the same stream of this process as it arrives while keeping
/// the lines for which `keep` is true; the other stream is inherited.
pub(crate) fn run_tee(
    cmd: &mut Command,
    stream: Stream,
    keep: fn(&str) -> bool,
) -> Result<(ExitStatus, Vec<String>), String> {
    flush_stdout();
    match stream {
        Stream::Stdout => cmd.stdout(Stdio::piped()),
        Stream::Stderr => cmd.stderr(Stdio::piped()),
    };
    let mut child = cmd
        .spawn()
        .map_err(|err| format!("cannot start `{}`: {err}", describe(cmd)))?;
    let piped: Option<Box<dyn Read>> = match stream {
        Stream::Stdout => child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn Read>),
        Stream::Stderr => child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn Read>),
    };
    let kept = match piped {
        Some(reader) => match stream {
            Stream::Stdout => tee_lines(reader, &mut io::stdout(), keep),
            Stream::Stderr => tee_lines(reader, &mut io::stderr(), keep),
        },
        None => Ok(Vec::new()),
    };
    // Wait even when echoing failed, so that no child is left behind.
    let status = child
        .wait()
        .map_err(|err| format!("cannot wait for `{}`: {err}", describe(cmd)))?;
    let kept =
        kept.map_err(|err| format!("cannot read the output of `{}`: {err}", describe(cmd)))?;
    Ok((status, kept))
}

/// Copies `reader` to `echo` line by line, flushing after each line, and returns the lines for
/// which `keep` is true (decoded lossily, without their line ending).
pub(crate) fn tee_lines(
    reader: impl Read,
    echo: &mut impl Write,
    keep: fn(&str) -> bool,
) -> io::Result<Vec<String>> {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut kept = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(kept);
        }
        echo.write_all(&line)?;
        echo.flush()?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if keep(text) {
            kept.push(text.to_owned());
        }
    }
}

/// Flushes this process's stdout so that our own lines come before a child's output.
pub(crate) fn flush_stdout() {
    // A failed flush of the terminal is not worth stopping a task for.
    let _ = io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_echoes_everything_and_keeps_matching_lines() {
        let input = b"alpha\ntest result: ok. 1 passed\r\nbeta\npartial test result: tail";
        let mut echo = Vec::new();
        let kept = tee_lines(&input[..], &mut echo, |line| line.contains("test result:")).unwrap();
        assert_eq!(echo, input.to_vec());
        assert_eq!(
            kept,
            vec![
                "test result: ok. 1 passed".to_owned(),
                "partial test result: tail".to_owned()
            ]
        );
    }

    #[test]
    fn describe_shortens_the_cargo_path() {
        let mut cmd = Command::new("/opt/toolchain/bin/cargo");
        cmd.args(["clippy", "--workspace"]);
        assert_eq!(describe(&cmd), "cargo clippy --workspace");
    }
}
