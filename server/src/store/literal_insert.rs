//! Recognizes client statements that insert only the values they were given:
//! `INSERT [OR <conflict>] INTO <table> [(<columns>)] VALUES (<atom>, …)[, (…)]…` where every
//! atom is a bound parameter, a number, a string or blob literal, or NULL. Such a statement
//! cannot compute TEXT: every text value it stores is a parameter (a Rust `String`, so UTF-8)
//! or a literal of the SQL text (UTF-8 too). The capture hook then skips reading each new
//! row's values to check them — the most common write, and the check was a good part of its
//! cost. Anything else (expressions, `SELECT`, upserts, `RETURNING`, comments, schema names)
//! is not recognized and keeps the check. Pure: no SQLite.

/// The target table of `sql` if it is such an insert (identifier quotes removed).
pub fn literal_insert_target(sql: &str) -> Option<String> {
    let mut t = Tokens {
        s: sql.as_bytes(),
        i: 0,
    };
    t.keyword("INSERT")?;
    if t.keyword("OR").is_some() {
        let action = t.word()?;
        let known = ["REPLACE", "IGNORE", "ABORT", "FAIL", "ROLLBACK"];
        known
            .iter()
            .any(|k| action.eq_ignore_ascii_case(k))
            .then_some(())?;
    }
    t.keyword("INTO")?;
    let table = t.identifier()?;
    if t.peek() == Some(b'(') {
        t.bump();
        t.list(|t| t.identifier().map(drop))?;
    }
    t.keyword("VALUES")?;
    loop {
        t.expect(b'(')?;
        t.list(Tokens::atom)?;
        match t.next_byte() {
            Some(b',') => continue,
            Some(b';') => {
                t.skip_space();
                return (t.i == t.s.len()).then_some(table);
            }
            None => return Some(table),
            Some(_) => return None,
        }
    }
}

struct Tokens<'a> {
    s: &'a [u8],
    i: usize,
}

impl Tokens<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) {
        self.i += 1;
    }

    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.bump();
        Some(b)
    }

    /// Items separated by commas up to the closing `)` (the opening one already read).
    fn list(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        loop {
            item(self)?;
            match self.next_byte()? {
                b',' => continue,
                b')' => return Some(()),
                _ => return None,
            }
        }
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next_byte()? == b).then_some(())
    }

    /// A bare word: letters, digits, `_`, starting with a letter or `_`.
    fn word(&mut self) -> Option<&str> {
        self.skip_space();
        let start = self.i;
        let first = *self.s.get(start)?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok()
    }

    fn keyword(&mut self, k: &str) -> Option<()> {
        let save = self.i;
        match self.word() {
            Some(w) if w.eq_ignore_ascii_case(k) => Some(()),
            _ => {
                self.i = save;
                None
            }
        }
    }

    /// A table or column name: a bare word, or one quoted with `"…"`, `` `…` `` or `[…]`
    /// (a quote doubled inside is not recognized: such names keep the check). A following `.`
    /// (a schema name) is not recognized either.
    fn identifier(&mut self) -> Option<String> {
        let name = match self.peek()? {
            open @ (b'"' | b'`' | b'[') => {
                let close = if open == b'[' { b']' } else { open };
                self.bump();
                let start = self.i;
                let len = self.s[start..].iter().position(|b| *b == close)?;
                self.i = start + len + 1;
                if self.s.get(self.i) == Some(&close) {
                    return None;
                }
                std::str::from_utf8(&self.s[start..start + len])
                    .ok()?
                    .to_string()
            }
            _ => self.word()?.to_string(),
        };
        (self.peek() != Some(b'.')).then_some(name)
    }

    /// A parameter, a number, a string or blob literal, or NULL.
    fn atom(&mut self) -> Option<()> {
        match self.peek()? {
            b'?' => {
                self.bump();
                while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
                Some(())
            }
            b':' | b'@' | b'$' => {
                self.bump();
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
            b'\'' => self.string(),
            b'x' | b'X' if self.s.get(self.i + 1) == Some(&b'\'') => {
                self.bump();
                self.string()
            }
            b'-' | b'+' | b'0'..=b'9' | b'.' => self.number(),
            _ => self.keyword("NULL"),
        }
    }

    fn string(&mut self) -> Option<()> {
        self.bump(); // the opening quote
        loop {
            let b = *self.s.get(self.i)?;
            self.i += 1;
            if b == b'\'' {
                if self.s.get(self.i) == Some(&b'\'') {
                    self.i += 1; // an escaped quote
                } else {
                    return Some(());
                }
            }
        }
    }

    fn number(&mut self) -> Option<()> {
        if matches!(self.s.get(self.i), Some(b'-' | b'+')) {
            self.i += 1;
        }
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E'))
        {
            // An exponent may carry a sign.
            if matches!(self.s[self.i], b'e' | b'E')
                && matches!(self.s.get(self.i + 1), Some(b'-' | b'+'))
            {
                self.i += 1;
            }
            self.i += 1;
        }
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_inserts_of_given_values() {
        let yes = [
            ("INSERT INTO items (id, name, qty, price) VALUES (?1, ?2, ?3, ?4)", "items"),
            ("insert into items values (?, ?, ?)", "items"),
            ("INSERT OR REPLACE INTO \"my items\" (\"id\") VALUES (:id)", "my items"),
            ("INSERT INTO [t] VALUES (1, -2.5e-3, 'it''s', NULL, x'00ff', @a, $b), (2, +3, '', null, X'', ?, ?7);", "t"),
            ("  INSERT   INTO `t`(a,b)VALUES(?,?)  ", "t"),
        ];
        for (sql, table) in yes {
            assert_eq!(literal_insert_target(sql).as_deref(), Some(table), "{sql}");
        }
    }

    #[test]
    fn anything_that_computes_a_value_keeps_the_check() {
        let no = [
            "INSERT INTO t VALUES (CAST(x'ff' AS TEXT))",
            "INSERT INTO t VALUES (char(255))",
            "INSERT INTO t VALUES (? || ?)",
            "INSERT INTO t VALUES (1 + 1)",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
            "INSERT INTO t VALUES (1) RETURNING id",
            "INSERT INTO main.t VALUES (1)",
            "INSERT INTO \"a\"\"b\" VALUES (1)",
            "INSERT INTO t VALUES (1) -- comment",
            "INSERT INTO t VALUES (1); DELETE FROM t",
            "INSERT INTO t DEFAULT VALUES",
            "INSERT OR WHATEVER INTO t VALUES (1)",
            "REPLACE INTO t VALUES (1)",
            "UPDATE t SET v = 1",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "INSERT INTO t VALUES ('unterminated)",
            "INSERT INTO t VALUES (?",
            "INSERT INTO t VALUES (:)",
            "INSERT INTO t VALUES (abs(1))",
            "INSERT INTO t VALUES (TRUE)",
            "",
        ];
        for sql in no {
            assert_eq!(literal_insert_target(sql), None, "{sql}");
        }
    }
}
