//! `fedgate user add|passwd|remove|list`: the web console's accounts, kept in the node's state
//! folder (`console.db`, 0600). Passwords come from a prompt (not echoed), or for scripts from
//! `--password-file FILE` (`-` for standard input); never from the command line, where other
//! users could read them in the process list.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::console::accounts::{AccountError, AccountStore, Role};

/// A `user` command.
// The flattened argument groups document themselves (clap shows their fields' help).
#[allow(missing_docs)]
#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a console account with a role.
    Add {
        #[command(flatten)]
        common: Common,
        /// What the account may do: steward (catalog, grants, requests), operator (status,
        /// peers, subscriptions, referrals) or auditor (the audit log, never records).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set a new password for an account.
    Passwd {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Remove an account (its sessions end at their next request).
    Remove {
        #[command(flatten)]
        common: Common,
    },
    /// List the accounts and their roles.
    List {
        /// The node's gateway.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The node and the account.
#[derive(Args)]
pub struct Common {
    /// The node's gateway.toml (the accounts live in its state folder).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The account name: 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter.
    #[arg(value_name = "NAME")]
    name: String,
}

/// Where the password comes from.
#[derive(Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of FILE (`-`: standard input) instead of a prompt.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?}: the roles are steward, operator and auditor"))
}

/// Why a `user` command failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The config did not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The account store refused or failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The password could not be read.
    #[error("{0}")]
    Password(String),
}

fn store(config: &Path) -> Result<AccountStore, UserError> {
    let cfg = crate::config::load(config)?;
    Ok(AccountStore::open(&AccountStore::path_in(&cfg.state_dir))?)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Runs one `user` command.
pub fn run(cmd: UserCommand) -> Result<(), UserError> {
    match cmd {
        UserCommand::Add { common, role, password } => {
            crate::console::accounts::check_name(&common.name)?;
            let s = store(&common.config)?;
            let pw = read_password(&password)?;
            s.add(&common.name, role, &pw, now())?;
            println!("account {} added with role {}", common.name, role.as_str());
        }
        UserCommand::Passwd { common, password } => {
            let s = store(&common.config)?;
            if s.role_of(&common.name)?.is_none() {
                return Err(AccountError::Unknown(common.name).into());
            }
            let pw = read_password(&password)?;
            s.passwd(&common.name, &pw, now())?;
            println!("password of {} changed", common.name);
        }
        UserCommand::Remove { common } => {
            store(&common.config)?.remove(&common.name)?;
            println!("account {} removed", common.name);
        }
        UserCommand::List { config } => {
            for (name, role) in store(&config)?.list()? {
                println!("{name}\t{}", role.as_str());
            }
        }
    }
    Ok(())
}

fn first_line(r: &mut dyn BufRead, from: &str) -> Result<String, UserError> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| UserError::Password(format!("{from}: {e}")))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        return Err(UserError::Password(format!("{from}: no password on the first line")));
    }
    Ok(pw)
}

fn read_password(a: &PasswordArgs) -> Result<String, UserError> {
    match &a.password_file {
        Some(p) if p.as_os_str() == "-" => first_line(&mut std::io::stdin().lock(), "standard input"),
        Some(p) => {
            let f =
                std::fs::File::open(p).map_err(|e| UserError::Password(format!("{}: {e}", p.display())))?;
            first_line(&mut std::io::BufReader::new(f), &p.display().to_string())
        }
        None if std::io::stdin().is_terminal() => {
            let pw = prompt("Password: ")?;
            if prompt("Again: ")? != pw {
                return Err(UserError::Password("the two passwords differ".into()));
            }
            Ok(pw)
        }
        None => first_line(&mut std::io::stdin().lock(), "standard input"),
    }
}

/// Reads a line from the terminal with echo off (through `stty`, so no terminal library is
/// needed); echo is restored whatever happens.
fn prompt(label: &str) -> Result<String, UserError> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let hidden = stty("-echo");
    let line = first_line(&mut std::io::stdin().lock(), "the terminal");
    if hidden {
        stty("echo");
    }
    eprintln!();
    line
}
