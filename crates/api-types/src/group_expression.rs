//! The boolean expression that combines the verdicts of a policy group's members.
//!
//! The language is the subset of CEL upstream accepts for groups: member calls `name()`,
//! `true`, `false`, `!`, `&&`, `||`, `==`, `!=` and parentheses. It is parsed once, when the
//! group is validated or loaded, and evaluated lazily: `a() && b()` does not evaluate `b` when
//! `a` rejects, so members whose verdict cannot change the outcome are never run.

use std::collections::BTreeSet;
use std::fmt;

/// A parsed group expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupExpression {
    Literal(bool),
    /// The verdict of the member with this name (`true` = accepted).
    Member(String),
    Not(Box<GroupExpression>),
    And(Box<GroupExpression>, Box<GroupExpression>),
    Or(Box<GroupExpression>, Box<GroupExpression>),
    Equal(Box<GroupExpression>, Box<GroupExpression>),
    NotEqual(Box<GroupExpression>, Box<GroupExpression>),
}

/// Why an expression could not be parsed; `position` is a byte offset into the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid group expression at character {position}: {message}")]
pub struct ExpressionError {
    pub position: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    LParen,
    RParen,
    Not,
    And,
    Or,
    Equal,
    NotEqual,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(name) => write!(f, "'{name}'"),
            Token::LParen => f.write_str("'('"),
            Token::RParen => f.write_str("')'"),
            Token::Not => f.write_str("'!'"),
            Token::And => f.write_str("'&&'"),
            Token::Or => f.write_str("'||'"),
            Token::Equal => f.write_str("'=='"),
            Token::NotEqual => f.write_str("'!='"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ExpressionError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let two = bytes.get(i..i + 2);
        let (token, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Token::LParen, 1),
            b')' => (Token::RParen, 1),
            b'&' if two == Some(b"&&") => (Token::And, 2),
            b'|' if two == Some(b"||") => (Token::Or, 2),
            b'=' if two == Some(b"==") => (Token::Equal, 2),
            b'!' if two == Some(b"!=") => (Token::NotEqual, 2),
            b'!' => (Token::Not, 1),
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !(*b == b'_' || b.is_ascii_alphanumeric()))
                    .map_or(bytes.len(), |n| i + n);
                (Token::Ident(text[i..end].to_string()), end - i)
            }
            _ => {
                let found = text[i..].chars().next().unwrap_or('?');
                return Err(ExpressionError {
                    position: i,
                    message: format!(
                        "unexpected {found:?}; only member calls, true, false, !, &&, ||, ==, != and parentheses are allowed"
                    ),
                });
            }
        };
        tokens.push((i, token));
        i += len;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(p, _)| *p)
    }

    fn error(&self, message: impl Into<String>) -> ExpressionError {
        ExpressionError {
            position: self.position(),
            message: message.into(),
        }
    }

    fn expect(&mut self, expected: Token) -> Result<(), ExpressionError> {
        match self.peek() {
            Some(t) if *t == expected => {
                self.next += 1;
                Ok(())
            }
            Some(t) => Err(self.error(format!("expected {expected}, found {t}"))),
            None => Err(self.error(format!("expected {expected}, found the end"))),
        }
    }

    fn or(&mut self) -> Result<GroupExpression, ExpressionError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.next += 1;
            left = GroupExpression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<GroupExpression, ExpressionError> {
        let mut left = self.equality()?;
        while self.peek() == Some(&Token::And) {
            self.next += 1;
            left = GroupExpression::And(Box::new(left), Box::new(self.equality()?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<GroupExpression, ExpressionError> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some(Token::Equal) => {
                    self.next += 1;
                    left = GroupExpression::Equal(Box::new(left), Box::new(self.unary()?));
                }
                Some(Token::NotEqual) => {
                    self.next += 1;
                    left = GroupExpression::NotEqual(Box::new(left), Box::new(self.unary()?));
                }
                _ => return Ok(left),
            }
        }
    }

    fn unary(&mut self) -> Result<GroupExpression, ExpressionError> {
        if self.peek() == Some(&Token::Not) {
            self.next += 1;
            return Ok(GroupExpression::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<GroupExpression, ExpressionError> {
        match self.peek().cloned() {
            Some(Token::LParen) => {
                self.next += 1;
                let inner = self.or()?;
                self.expect(Token::RParen)?;
                Ok(inner)
            }
            Some(Token::Ident(name)) => {
                self.next += 1;
                match name.as_str() {
                    "true" => Ok(GroupExpression::Literal(true)),
                    "false" => Ok(GroupExpression::Literal(false)),
                    _ => {
                        if self.peek() != Some(&Token::LParen) {
                            return Err(
                                self.error(format!("member '{name}' must be called as {name}()"))
                            );
                        }
                        self.expect(Token::LParen)?;
                        self.expect(Token::RParen)?;
                        Ok(GroupExpression::Member(name))
                    }
                }
            }
            Some(t) => Err(self.error(format!(
                "expected a member call, true, false, '!' or '(', found {t}"
            ))),
            None => Err(self.error("the expression ends too early")),
        }
    }
}

impl GroupExpression {
    /// Parses an expression.
    pub fn parse(text: &str) -> Result<Self, ExpressionError> {
        let mut parser = Parser {
            tokens: tokenize(text)?,
            next: 0,
            end: text.len(),
        };
        if parser.tokens.is_empty() {
            return Err(parser.error("the expression is empty"));
        }
        let expression = parser.or()?;
        if let Some(t) = parser.peek() {
            return Err(parser.error(format!("unexpected {t} after a complete expression")));
        }
        Ok(expression)
    }

    /// Names of the members the expression calls.
    pub fn members(&self) -> BTreeSet<&str> {
        let mut names = BTreeSet::new();
        self.collect_members(&mut names);
        names
    }

    fn collect_members<'a>(&'a self, names: &mut BTreeSet<&'a str>) {
        match self {
            GroupExpression::Literal(_) => {}
            GroupExpression::Member(name) => {
                names.insert(name);
            }
            GroupExpression::Not(inner) => inner.collect_members(names),
            GroupExpression::And(a, b)
            | GroupExpression::Or(a, b)
            | GroupExpression::Equal(a, b)
            | GroupExpression::NotEqual(a, b) => {
                a.collect_members(names);
                b.collect_members(names);
            }
        }
    }

    /// Evaluates the expression, asking `verdict` for a member's result only when the outcome
    /// depends on it. The first error `verdict` returns stops the evaluation.
    pub fn evaluate<E>(
        &self,
        verdict: &mut impl FnMut(&str) -> Result<bool, E>,
    ) -> Result<bool, E> {
        Ok(match self {
            GroupExpression::Literal(value) => *value,
            GroupExpression::Member(name) => verdict(name)?,
            GroupExpression::Not(inner) => !inner.evaluate(verdict)?,
            GroupExpression::And(a, b) => a.evaluate(verdict)? && b.evaluate(verdict)?,
            GroupExpression::Or(a, b) => a.evaluate(verdict)? || b.evaluate(verdict)?,
            GroupExpression::Equal(a, b) => a.evaluate(verdict)? == b.evaluate(verdict)?,
            GroupExpression::NotEqual(a, b) => a.evaluate(verdict)? != b.evaluate(verdict)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn eval(text: &str, verdicts: &[(&str, bool)]) -> (bool, Vec<String>) {
        let verdicts: BTreeMap<_, _> = verdicts.iter().copied().collect();
        let mut asked = Vec::new();
        let result = GroupExpression::parse(text)
            .expect("parses")
            .evaluate(&mut |name: &str| {
                asked.push(name.to_string());
                Ok::<_, ()>(verdicts[name])
            })
            .expect("evaluates");
        (result, asked)
    }

    #[test]
    fn precedence_follows_cel() {
        // && binds tighter than ||, ! tighter than both.
        assert!(
            eval(
                "a() || b() && c()",
                &[("a", true), ("b", false), ("c", false)]
            )
            .0
        );
        assert!(
            !eval(
                "(a() || b()) && c()",
                &[("a", true), ("b", false), ("c", false)]
            )
            .0
        );
        assert!(eval("!a() || b()", &[("a", false), ("b", false)]).0);
        assert!(eval("a() == b()", &[("a", false), ("b", false)]).0);
        assert!(eval("a() != b() && true", &[("a", true), ("b", false)]).0);
    }

    #[test]
    fn evaluation_is_lazy() {
        let (result, asked) = eval("a() && b()", &[("a", false), ("b", true)]);
        assert!(!result);
        assert_eq!(asked, ["a"]);
        let (result, asked) = eval("a() || b()", &[("a", true), ("b", false)]);
        assert!(result);
        assert_eq!(asked, ["a"]);
    }

    #[test]
    fn members_are_listed() {
        let e = GroupExpression::parse("happy() && (!sad() || happy())").expect("parses");
        assert_eq!(
            e.members().into_iter().collect::<Vec<_>>(),
            ["happy", "sad"]
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            ("", 0, "empty"),
            ("a() &&", 6, "ends too early"),
            ("a() & b()", 4, "unexpected '&'"),
            ("a && b()", 2, "must be called as a()"),
            ("a() b()", 4, "after a complete expression"),
            ("(a()", 4, "expected ')'"),
            ("a(1)", 2, "unexpected '1'"),
            ("size(a()) > 1", 10, "unexpected '>'"),
            ("size(a())", 5, "expected ')'"),
        ];
        for (text, position, fragment) in cases {
            let err = GroupExpression::parse(text).expect_err(text);
            assert_eq!(err.position, position, "{text}: {err}");
            assert!(err.message.contains(fragment), "{text}: {err}");
        }
    }
}
