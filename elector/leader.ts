/**
 * The current leader as the app sees it, and who is listening for changes. Pure: the
 * election publishes verdicts with a timestamp; this turns them into the NAIS-compatible
 * result (`name`, `last_update`, plus additive fields) and tells subscribers when the result
 * changes, never otherwise (no duplicate events, no fresh `last_update` on a resync).
 */

export type ElectionState = 'leader' | 'follower' | 'unknown';

/** What the election concluded at one moment. */
export interface Verdict {
  state: ElectionState;
  /** The leader's hostname as its own pod sees it; '' when there is none or it is unknown. */
  name: string;
  /** The leader's pod name; '' when unknown. */
  pod: string;
  /** The leader's pod UID; '' when unknown. Distinguishes two pods with one name. */
  uid: string;
  /** Why: a short machine-readable reason (`leader`, `follower`, `no-lease`, `unconfirmed`, ...). */
  reason: string;
}

/** The JSON of `GET /` and of every SSE event. NAIS's fields first; the rest are additive. */
export interface Result {
  name: string;
  /** RFC 3339; when the leader last changed (as reported here). '' before the first result. */
  last_update: string;
  is_leader: boolean;
  state: ElectionState;
  /** The leader's pod name ('' when none or unknown). */
  leader_pod: string;
}

export interface Snapshot {
  result: Result;
  /** Increases by one with every change of `result`; the SSE event id. */
  id: number;
  /**
   * False until the elector first knew the leader: `GET /` answers 503 and `/readyz` fails
   * until then, so an app never reads a made-up answer.
   */
  known: boolean;
  reason: string;
}

export type Listener = (snapshot: Snapshot) => void;

const INITIAL: Result = { name: '', last_update: '', is_leader: false, state: 'unknown', leader_pod: '' };

/** Holds the published result and its subscribers. One per process; passed to the servers. */
export class LeaderBoard {
  #snapshot: Snapshot = { result: INITIAL, id: 0, known: false, reason: 'starting' };
  #leaderKey = '';
  #listeners = new Set<Listener>();
  #decide: (() => void) | undefined;
  #deciding = false;

  /**
   * Has every read of the result first bring the verdict up to this moment (`decide`
   * publishes it if it changed): an answer never rests on a timer having fired on time,
   * so a claim past the fencing bound is withdrawn by the very request that asks.
   */
  decideOnRead(decide: () => void): void {
    this.#decide = decide;
  }

  /** The result as last published, deciding nothing (for log lines: no log line inside a log line). */
  peek(): Snapshot {
    return this.#snapshot;
  }

  /** The current result; `known` false means "answer 503". */
  snapshot(): Snapshot {
    if (this.#decide && !this.#deciding) {
      this.#deciding = true;
      try {
        this.#decide();
      } finally {
        this.#deciding = false;
      }
    }
    return this.#snapshot;
  }

  get subscriberCount(): number {
    return this.#listeners.size;
  }

  /**
   * Records a verdict taken at `nowMs`. Returns true when the visible result changed (and
   * subscribers were told). `last_update` moves only when the leader (name and pod UID)
   * changes, including to and from "no leader".
   */
  publish(verdict: Verdict, nowMs: number): boolean {
    const prev = this.#snapshot;
    const firstResult = verdict.state === 'leader' || (verdict.state === 'follower' && verdict.name !== '');
    const known = prev.known || firstResult;
    const name = verdict.state === 'unknown' ? '' : verdict.name;
    const pod = verdict.state === 'unknown' ? '' : verdict.pod;
    const key = name === '' ? '' : `${name}\u0000${verdict.uid}`;
    let lastUpdate = prev.result.last_update;
    if (known && (key !== this.#leaderKey || lastUpdate === '')) {
      lastUpdate = new Date(nowMs).toISOString();
    }
    const result: Result = {
      name,
      last_update: known ? lastUpdate : '',
      is_leader: verdict.state === 'leader',
      state: verdict.state,
      leader_pod: pod,
    };
    const changed = known !== prev.known || !sameResult(result, prev.result);
    this.#leaderKey = known ? key : '';
    if (!changed) {
      if (verdict.reason !== prev.reason) this.#snapshot = { ...prev, reason: verdict.reason };
      return false;
    }
    this.#snapshot = { result, id: prev.id + 1, known, reason: verdict.reason };
    for (const listener of [...this.#listeners]) listener(this.#snapshot);
    return true;
  }

  /** Calls `listener` on every change until the returned function is called. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }
}

function sameResult(a: Result, b: Result): boolean {
  return (
    a.name === b.name &&
    a.last_update === b.last_update &&
    a.is_leader === b.is_leader &&
    a.state === b.state &&
    a.leader_pod === b.leader_pod
  );
}
