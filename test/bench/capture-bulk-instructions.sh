#!/usr/bin/env bash
# Instructions per 1,000-row statement captured by statement, counted by callgrind: the previous capture
# function (migrations up to 0007, schema prev) against this release's (every migration, schema public), on
# tables of one shape, plus the same statement on a plain table. Each statement runs N and 2N times in
# single-user mode under callgrind; the difference ÷ N is one statement with its commit, without the start-up.
# Run: npm run build && test/bench/capture-bulk-instructions.sh [N]   (needs valgrind and PostgreSQL's server binaries)
set -euo pipefail
n=${1:-10}
bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
root=$(mktemp -d /tmp/capture-bulk.XXXXXX)
port=5498
run_as=()
if [ "$(id -u)" = 0 ]; then chown postgres "$root"; run_as=(runuser -u postgres --); fi
trap '"${run_as[@]}" "$bin/pg_ctl" -D "$root/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$root"' EXIT

"${run_as[@]}" "$bin/initdb" -D "$root/data" -U postgres --auth=trust >/dev/null
"${run_as[@]}" "$bin/pg_ctl" -D "$root/data" -o "-p $port -k $root -c timezone=UTC" -l "$root/log" -w start >/dev/null
ROWS=$((3 * n * 1000 + 1000)) DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres" node --input-type=module -e '
  import postgres from "postgres"
  import { captureTable, migrate, outboxTable } from "./dist/index.js"
  const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice() {} })
  const shape = "(id bigserial primary key, name text not null, amount int not null, note text not null default repeat($$x$$, 200), updated_at timestamptz not null default now())"
  await migrate({ sql })
  await sql`create schema prev`
  await migrate({ sql, schema: "prev", target: "0007_capture_truncate" })
  for (const table of ["t_plain", "t_previous", "t_statement"]) {
    await sql.unsafe(`create table ${table} ${shape}`)
    await sql.unsafe(`insert into ${table} (name, amount) select $$item$$, n from generate_series(1, ${process.env.ROWS}) n`)
  }
  await sql`select prev.outbox_capture_table(${"public.t_previous"}::regclass, ${"item"}, ${"id"}, mode => ${"statement"})`
  await captureTable(sql, outboxTable("public", "outbox"), { table: "t_statement", entity: "item", mode: "statement" })
  await sql.end()'
"${run_as[@]}" "$bin/pg_ctl" -D "$root/data" -w stop >/dev/null

count() { # script file: total instructions of a single-user session running it
  chmod 644 "$1"
  "${run_as[@]}" valgrind --tool=callgrind --callgrind-out-file="$root/callgrind.out" "$bin/postgres" --single -D "$root/data" \
    -c fsync=off -c autovacuum=off -c timezone=UTC postgres < "$1" > /dev/null 2> "$root/valgrind.log"
  grep -E '^(summary|totals):' "$root/callgrind.out" | head -1 | awk '{print $2}'
}
script() { # statement template (%t table, %k the statement's number), table, repetitions, file
  : > "$4"
  for k in $(seq 1 "$3"); do local s=${1//%t/$2}; echo "${s//%k/$k}" >> "$4"; done
}
printf '%-8s %14s %14s %14s %10s\n' write plain previous this_release ratio
for write in "insert into %t (name, amount) select 'item', g from generate_series(1, 1000) g;" \
             "update %t set amount = amount + 1 where id <= 1000;" \
             "delete from %t where id > (%k - 1) * 1000 and id <= %k * 1000;"; do
  line=$(echo "$write" | cut -d' ' -f1)
  values=()
  for table in t_plain t_previous t_statement; do
    # the deletes of the 2N run start where those of the N run stopped: a restart from the same data directory
    # would see them already gone, so each run gets its own copy
    rm -rf "$root/copy" && cp -a "$root/data" "$root/copy"
    script "$write" "$table" "$n" "$root/once.sql"
    once=$(count "$root/once.sql")
    rm -rf "$root/data" && mv "$root/copy" "$root/data" && cp -a "$root/data" "$root/copy"
    script "$write" "$table" $((2 * n)) "$root/twice.sql"
    twice=$(count "$root/twice.sql")
    rm -rf "$root/data" && mv "$root/copy" "$root/data"
    values+=($(( (twice - once) / n )))
  done
  printf '%-8s %14s %14s %14s %10s\n' "$line" "${values[@]}" "$(echo "scale=4; ${values[2]} / ${values[1]}" | bc)"
done
